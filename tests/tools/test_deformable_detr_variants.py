"""Every Deformable DETR variant trains through tools/train.py and evaluates through test.py."""
from __future__ import annotations

import json

import pytest

pytest.importorskip('mmdet')

from tests.helpers.tiny_configs import tiny_ddetr_config  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402

VARIANTS = {
    'single-scale': dict(num_feature_levels=1),
    'multi-scale': dict(),
    'refine': dict(with_box_refine=True),
    'refine-two-stage': dict(with_box_refine=True, as_two_stage=True),
}


def _assert_ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_variant_trains_and_evaluates(variant, tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, **VARIANTS[variant])
    work_dir = tmp_path / 'train'
    _assert_ok(run_tool('train.py', str(config), '--work-dir', str(work_dir)))
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()
    train_log = next(work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()
    losses = [json.loads(line)['loss'] for line in train_log if '"loss"' in line]
    assert losses and all(loss == loss and loss > 0 for loss in losses)  # finite, not NaN

    test_dir = tmp_path / 'test'
    _assert_ok(run_tool('test.py', str(config), str(checkpoint), '--work-dir', str(test_dir)))
    metrics = json.loads(next(test_dir.glob('*/*.json')).read_text())
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
