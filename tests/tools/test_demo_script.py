"""tools/demo.sh reports the files of its own run, also in a work dir an earlier (interrupted)
run left behind. The tools it calls are replaced by a stub that writes what they would."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO_ROOT

# what each tool the script calls leaves in the work dir
STUB = """#!/usr/bin/env bash
set -eu
arg_after() { local key=$1; shift; while [[ $# -gt 1 ]]; do
    [[ $1 == "$key" ]] && { echo "$2"; return; }; shift; done; }
case "$*" in
  *torch.distributed.run*)
    work=$(arg_after --work-dir "$@")
    mkdir -p "$work/$(date +%Y%m%d_%H%M%S)/vis_data"
    echo weights > "$work/epoch_1.pth"
    echo "$work/epoch_1.pth" > "$work/last_checkpoint" ;;
  *tools/test.py*)
    run="$(arg_after --work-dir "$@")/$(date +%Y%m%d_%H%M%S)"
    mkdir -p "$run/vis"
    echo '{"coco/bbox_mAP": 0.25}' > "$run/metrics.json" ;;
  -c*) exec {python} "$@" ;;
  *) ;;  # tile_images.py, visualize_deformable.py
esac
"""


def test_demo_prints_the_log_folder_of_its_own_run(tmp_path):
    work_dir = tmp_path / 'demo'
    interrupted = work_dir / '20200101_000000'
    interrupted.mkdir(parents=True)  # logs of an earlier run killed before a checkpoint
    old = time.time() - 3600
    os.utime(interrupted, (old, old))
    stub = tmp_path / 'python'
    stub.write_text(STUB.replace('{python}', sys.executable))
    stub.chmod(0o755)

    proc = subprocess.run(['bash', str(REPO_ROOT / 'tools' / 'demo.sh')],
                          env=dict(os.environ, PY=str(stub), WORK_DIR=str(work_dir)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line, ) = [line for line in proc.stdout.splitlines() if 'training logs:' in line]
    logs = Path(line.split('training logs:')[1].strip())
    assert logs.parent == work_dir and logs != interrupted, line
    assert (logs / 'vis_data').is_dir(), line
    assert '[demo] bbox mAP (val):  0.25' in proc.stdout
    assert f'[demo] checkpoint:      {work_dir}/epoch_1.pth' in proc.stdout
