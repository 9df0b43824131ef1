"""``tools/train.py --amp`` on a CPU-only machine trains under bf16 autocast: 50 iterations of
Deformable DETR and of a DAT detector with finite losses, the deformable attention op fed bf16
values (its fp32 accumulation under autocast is tested in tests/ops/test_msda_precision.py),
and of DINO (denoising queries and all).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers.demo_training import FCOS_DEMO_CONFIG
from tests.helpers.forked_runs import run_forked
from tests.helpers.tiny_configs import TINY_DAT, tiny_ddetr_config, tiny_dino_model

ITERS = 50


def ddetr(tmp: Path, root: Path) -> Path:
    return tiny_ddetr_config(tmp, root, with_box_refine=True, as_two_stage=True)


def dat_fcos(tmp: Path, root: Path) -> Path:
    path = tmp / 'fcos_tiny_dat.py'
    path.write_text(f"""
_base_ = ['{FCOS_DEMO_CONFIG}']
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)
data_root = '{root}/'
model = dict(backbone=dict(_delete_=True, **{TINY_DAT!r}), neck=dict(in_channels=[32, 64, 128]))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
""")
    return path


def dino(tmp: Path, root: Path) -> Path:
    return tiny_ddetr_config(tmp, root, model=tiny_dino_model(), name='tiny_dino')


MODELS = {'deformable_detr_refine_twostage': ddetr, 'dino': dino, 'fcos_dat++': dat_fcos}


def amp_config(tmp: Path, base: Path) -> Path:
    path = tmp / f'amp_{base.stem}.py'
    path.write_text(f"""
_base_ = ['{base}']
custom_imports = dict(imports=['dat_det.models', 'tests.helpers.probe_hooks'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='MSDADtypeProbeHook')]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={ITERS}, val_interval=10**6)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={ITERS}))
log_processor = dict(by_epoch=False, window_size=1)
param_scheduler = []
train_dataloader = dict(batch_size=1)
""")
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason='--amp means fp16 on a GPU machine')
@pytest.mark.parametrize('name', list(MODELS))
def test_amp_on_cpu_trains_in_bf16_with_finite_losses(tmp_path, tiny_shapes_root, name):
    config = amp_config(tmp_path, MODELS[name](tmp_path, tiny_shapes_root))
    work_dir = tmp_path / 'work'
    proc = run_forked('train.py', str(config), '--work-dir', str(work_dir), '--amp',
                      log=tmp_path / 'train.log')
    log = proc.output
    assert proc.returncode == 0, log[-4000:]
    assert "type='CPUAutocastOptimWrapper'" in log
    if name != 'fcos_dat++':
        assert 'MSDA value dtype=torch.bfloat16 autocast=True' in log, log[-3000:]
    scalars = next(work_dir.glob('*/vis_data/scalars.json'))
    losses = [json.loads(line)['loss'] for line in scalars.read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == ITERS
    assert all(math.isfinite(v) for v in losses), losses
