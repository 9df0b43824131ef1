"""End-to-end runs of tools/train.py and tools/test.py on a tiny generated dataset."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.demo_training import (
    FCOS_DEMO_CONFIG,
    assert_same_tensors,
    data_options,
    load_checkpoint,
)
from tests.helpers.tool_runs import run_tool


def train(work_dir: Path, root: Path, *extra: str, resume: str | None = None):
    args = [FCOS_DEMO_CONFIG, '--work-dir', str(work_dir)]
    if resume is not None:
        args += ['--resume', resume]
    return run_tool('train.py', *args, '--cfg-options', *data_options(root), *extra)


def assert_ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_train_then_test_reports_coco_map(tmp_path, tiny_shapes_root):
    work_dir = tmp_path / 'run'
    assert_ok(train(work_dir, tiny_shapes_root, 'train_cfg.max_epochs=1'))
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()
    out = tmp_path / 'preds.pkl'
    proc = run_tool('test.py', FCOS_DEMO_CONFIG, str(checkpoint), '--work-dir',
                    str(tmp_path / 'test'), '--out', str(out), '--show-dir', 'vis', '--cfg-options',
                    *data_options(tiny_shapes_root), 'model.test_cfg.score_thr=0.0')
    assert_ok(proc)
    metrics = json.loads(next((tmp_path / 'test').glob('*/*.json')).read_text())
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert out.is_file() and out.stat().st_size > 0
    assert len(list((tmp_path / 'test').glob('*/vis/*.jpg'))) == 4


def test_resume_continues_where_interrupted(tmp_path, tiny_shapes_root):
    """Two epochs in one go and 1 + resumed 1 epoch end with identical weights and optimizer."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    # Random flips draw from numpy's global generator, which a checkpoint does not hold.
    no_flip = 'train_dataloader.dataset.pipeline.3.prob=0.0'
    assert_ok(train(straight, tiny_shapes_root, 'train_cfg.max_epochs=2', no_flip))
    assert_ok(train(split, tiny_shapes_root, 'train_cfg.max_epochs=1', no_flip))
    interrupted = load_checkpoint(split / 'epoch_1.pth')
    proc = train(split, tiny_shapes_root, 'train_cfg.max_epochs=2', no_flip, resume='auto')
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1, iter: 4' in log, log[-3000:]
    first_logged = next(line for line in log.splitlines() if 'Epoch(train)' in line)
    assert '[2][1/4]' in first_logged, first_logged

    a = load_checkpoint(straight / 'epoch_2.pth')
    b = load_checkpoint(split / 'epoch_2.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert_same_tensors(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
    assert interrupted['meta']['iter'] == 4

    proc = run_tool('test.py', FCOS_DEMO_CONFIG, str(split / 'epoch_2.pth'), '--work-dir',
                    str(tmp_path / 'test'), '--cfg-options', *data_options(tiny_shapes_root),
                    'model.test_cfg.score_thr=0.0')
    assert_ok(proc)
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason='needs gloo')
def test_two_process_ddp_training(tmp_path, tiny_shapes_root):
    work_dir = tmp_path / 'ddp'
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                '--master_port', '29533']
    proc = run_tool('train.py', FCOS_DEMO_CONFIG, '--work-dir', str(work_dir), '--launcher',
                    'pytorch', '--cfg-options', *data_options(tiny_shapes_root),
                    'train_cfg.max_epochs=1', 'env_cfg.dist_cfg.backend=gloo',
                    launcher=launcher)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log, log[-3000:]
    assert (work_dir / 'epoch_1.pth').is_file()
    # 8 images, batch 2 per process, 2 processes: 2 iterations per epoch.
    assert load_checkpoint(work_dir / 'epoch_1.pth')['meta']['iter'] == 2
