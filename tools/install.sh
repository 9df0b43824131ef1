#!/usr/bin/env bash
# Create (or update) the project virtualenv with the whole dat_det stack.
#
# Idempotent: a stamp keyed on the requirement files and this script makes a re-run a no-op.
#
# Choices, and why:
# * torch 2.14.0 + torchvision 0.29.0 from the package index (the regular CUDA build). It runs
#   on CPU-only machines too, and it is the newest pair for which a torchvision build exists
#   everywhere; timm and mmdet import torchvision, so a torch without one is no option.
# * mmcv 2.1.0: mmdet 3.3 requires mmcv < 2.2, and mmcv publishes no wheels for recent torch,
#   so it is built here from its source distribution with its ops (MMCV_WITH_OPS=1).
#   torch >= 2.14 headers need C++20 while mmcv's setup.py hard-codes -std=c++14/17, so the
#   flags are raised to c++20 before building. The built wheel is cached per torch version
#   (DAT_DET_CACHE, default ~/.cache/dat_det) so that fresh virtualenvs skip the ~5 min build.
#   Set FORCE_CUDA=1 and TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0") to build the CUDA ops.
# * setuptools 79: torch needs >= 77.0.3 and mmcv's setup.py imports pkg_resources, which
#   newer setuptools no longer ship.
# * numpy < 2: mmcv 2.1 / mmdet 3.3 predate numpy 2.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CACHE=${DAT_DET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dat_det}
MMCV_VERSION=$(sed -n 's/^mmcv==//p' constraints.txt)
STAMP="$VENV/.dat_det-install-stamp"

key=$(cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml tools/install.sh \
      | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$key" ]]; then
    echo "[install] $VENV is up to date."
    exit 0
fi

"$PYTHON" - <<'EOF'
import sys
if sys.version_info < (3, 9):
    sys.exit(f'[install] Python >= 3.9 is required, found {sys.version.split()[0]}')
EOF

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c constraints.txt "$@"; }

echo "[install] base packages (torch, torchvision, build tools)"
pip_install pip setuptools wheel ninja
pip_install torch torchvision numpy opencv-python-headless mmengine

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    echo "[install] mmcv $MMCV_VERSION with ops already installed"
else
    torch_tag=$("$PY" -c "import torch, sys; print(f'torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}')")
    [[ "${FORCE_CUDA:-0}" == 1 ]] && torch_tag="$torch_tag-cuda${TORCH_CUDA_ARCH_LIST:-all}" || true
    wheel_dir="$CACHE/wheels/${torch_tag//[^A-Za-z0-9._-]/_}"
    if ! ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        echo "[install] building mmcv $MMCV_VERSION with ops from source (several minutes)"
        build=$(mktemp -d)
        trap 'rm -rf "$build"' EXIT
        "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
            --no-build-isolation -d "$build" "mmcv==$MMCV_VERSION"
        tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
        sed -i -E 's#-std=c\+\+1[47]#-std=c++20#g; s#/std:c\+\+1[47]#/std:c++20#g' \
            "$build/mmcv-$MMCV_VERSION/setup.py"
        mkdir -p "$wheel_dir"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel -q \
            --disable-pip-version-check --no-deps --no-build-isolation \
            -w "$wheel_dir" "$build/mmcv-$MMCV_VERSION"
    fi
    pip_install --no-deps "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl
fi

echo "[install] dat_det and the rest of the stack"
pip_install -r requirements.txt -r requirements-dev.txt
pip_install --no-deps -e .

"$PY" -c "import torch, mmcv.ops, mmdet, mmengine, timm, dat_det; \
print(f'[install] ok: torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '\
      f'mmengine {mmengine.__version__}, timm {timm.__version__}')"
echo "$key" > "$STAMP"
