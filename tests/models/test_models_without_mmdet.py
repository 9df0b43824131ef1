"""Without mmdet, ``dat_det.models.layers`` still works and ``dat_det.models`` fails loudly
where its registered pieces are asked for (never registering nothing in silence)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO_ROOT

# None in sys.modules: importing the package raises ModuleNotFoundError and
# importlib.util.find_spec finds nothing, as for a package that is not installed
HIDE_MMDET = textwrap.dedent("""
    import sys
    sys.modules.update(mmdet=None, mmcv=None)
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', HIDE_MMDET + textwrap.dedent(code)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_layers_import_and_run_with_torch_and_timm_only():
    proc = _run("""
        sys.modules.update(mmengine=None, einops=None)  # torch and timm only
        import torch
        from dat_det.models.layers.deformable_detr import MSDeformAttn
        attn = MSDeformAttn(16, num_heads=2, num_levels=1, num_points=2)
        out = attn(torch.randn(1, 3, 16), torch.randn(1, 12, 16), torch.rand(1, 3, 1, 2),
                   [(3, 4)], torch.tensor([0]))
        assert out.shape == (1, 3, 16)
        from dat_det.models.layers.dat import build_trunk, resolve_arch
        trunk = build_trunk(resolve_arch('dat++-t', dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
                                         groups=[1, 2, 2, 4], dim_stem=16, depths=[2, 2, 2, 2],
                                         stage_spec=[['N', 'D']] * 3 + [['D', 'D']]))
        x = trunk.patch_proj(torch.randn(1, 3, 64, 64))
        assert trunk.stages[0](x)[0].shape == (1, 16, 16, 16)
        import dat_det.models
        try:
            dat_det.models.DAT
        except ImportError as err:
            print('refused:', err)
        assert not any(sys.modules[m] for m in ('mmdet', 'mmcv', 'mmengine', 'einops'))
        print('layers ok')
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'layers ok' in proc.stdout
    assert "refused: dat_det.models registers DAT" in proc.stdout
    assert 'but mmdet is not installed' in proc.stdout


def test_custom_imports_of_models_fail_without_mmdet():
    proc = _run("""
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(['dat_det.models'], allow_failed_imports=False)
    """)
    assert proc.returncode != 0
    assert 'ImportError: dat_det.models registers DAT' in proc.stderr, proc.stderr[-3000:]
    assert 'mmdet is not installed' in proc.stderr
