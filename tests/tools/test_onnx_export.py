"""ONNX export of Deformable DETR and a DAT backbone: onnxruntime matches PyTorch at two sizes."""
from __future__ import annotations

import re

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('onnxruntime')

from tests.conftest import run_tool  # noqa: E402
from tests.tools.tiny_configs import random_checkpoint, tiny_ddetr_config  # noqa: E402


@pytest.fixture(scope='module')
def tiny_refine_model(tmp_path_factory, tiny_shapes_root):
    root = tmp_path_factory.mktemp('onnx')
    config = tiny_ddetr_config(root, tiny_shapes_root, with_box_refine=True)
    return config, random_checkpoint(config, root / 'tiny.pth')


def max_diffs(stdout: str) -> list:
    return [float(x) for x in re.findall(r' (\d\.\d+e[-+]\d+)', stdout)]


def test_deformable_detr_matches_pytorch_at_two_sizes(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    out = tmp_path / 'ddetr.onnx'
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                    str(out), '--shape', '128', '160', '--check-shape', '144', '208',
                    '--atol', '1e-4')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert out.is_file()
    assert 'at (128, 160)' in proc.stdout and 'at (144, 208)' in proc.stdout
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 4 and max(diffs) < 1e-4, proc.stdout

    import onnx
    model = onnx.load(str(out))
    assert {n.op_type for n in model.graph.node} >= {'GridSample'}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ['height', 'width']


def test_two_stage_deformable_detr_matches_pytorch(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, with_box_refine=True,
                               as_two_stage=True)
    checkpoint = random_checkpoint(config, tmp_path / 'tiny_twostage.pth')
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                    str(tmp_path / 'twostage.onnx'), '--shape', '128', '160',
                    '--check-shape', '160', '128', '--atol', '1e-4')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 4 and max(diffs) < 1e-4, proc.stdout


def test_dat_backbone_matches_pytorch(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--part',
                    'backbone', '--out', str(tmp_path / 'dat.onnx'), '--shape', '128', '128',
                    '--check-shape', '160', '192')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 6 and max(diffs) < 1e-4, proc.stdout


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(tmp_path / 'nope.pth'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'error: checkpoint not found: ' \
                                                   f'{tmp_path}/nope.pth'
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--opset', '13')
    assert proc.returncode == 2 and 'GridSample' in proc.stderr.strip().splitlines()[-1]
