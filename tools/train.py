"""Train a detector with mmengine's Runner (mmdet 3.x style).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
                          [--auto-scale-lr] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

Beyond mmengine's runner: checkpoints are written atomically, a NaN/inf loss stops the run
(``custom_hooks = [dict(type='NonFiniteLossHook', action='skip')]`` skips such batches
instead), unreadable training images are skipped and counted, and broken checkpoints or
pretrained files are refused in one line (see docs/reliability.md). ``compile = True`` (or a
dict of ``torch.compile`` arguments) in a config compiles the training step; on CPU Inductor
then calls eager's random-number generator (see ``dat_det/engine/compile_options.py``).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction

from dat_det.engine import amp_optim_wrapper, build_runner, set_work_dir, teardown_distributed
from dat_det.engine.compile_options import with_cpu_training_options
from dat_det.engine.train_guards import (
    check_pretrained_files,
    guard_nonfinite_loss,
    resume_checkpoint,
    skip_unreadable_train_images,
    use_atomic_checkpoints,
)
from dat_det.utils.checkpoint_compat import check_checkpoint
from dat_det.utils.config import load_config
from dat_det.utils.data_check import check_dataloader_datasets
from dat_det.utils.errors import UserInputError, exit_on_stopped_run, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 with loss scaling on a GPU, bf16 on a CPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from PATH, or (without a value) from the latest checkpoint of the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys, e.g. train_cfg.max_epochs=12')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _set_resume(cfg, resume: str | None) -> None:
    if resume == 'auto':
        # None (no checkpoint yet): mmengine's auto-resume finds none and starts from scratch.
        cfg.resume, cfg.load_from = True, resume_checkpoint(cfg.work_dir)
    elif resume is not None:
        if not osp.isfile(resume):
            raise UserInputError(f'--resume checkpoint not found: {resume}')
        check_checkpoint(resume, '--resume checkpoint')
        cfg.resume, cfg.load_from = True, resume
    elif cfg.get('load_from') and '://' not in cfg.load_from:
        if not osp.isfile(cfg.load_from):
            raise UserInputError(f'load_from checkpoint not found: {cfg.load_from}')
        check_checkpoint(cfg.load_from, 'load_from checkpoint')


def build_cfg(args: argparse.Namespace):
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') not in (
                'OptimWrapper', 'AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
            raise UserInputError(f'--amp cannot change optim_wrapper type '
                                 f'{cfg.optim_wrapper.type}; set its precision in the config')
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper, torch.cuda.is_available())
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserInputError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                                 'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    check_pretrained_files(cfg)
    _set_resume(cfg, args.resume)
    notes = check_dataloader_datasets(cfg, ('train', 'val'))
    use_atomic_checkpoints(cfg)
    guard_nonfinite_loss(cfg)
    skip_unreadable_train_images(cfg)
    if cfg.get('compile') is not None:
        cfg.compile = with_cpu_training_options(cfg.compile, torch.cuda.is_available())
    return cfg, notes


def main() -> None:
    args = parse_args()
    finished = False
    try:
        with exit_on_user_error():
            cfg, notes = build_cfg(args)
            runner = build_runner(cfg)
        for note in notes:
            runner.logger.warning(note)
        with exit_on_stopped_run():
            runner.train()
        finished = True
    finally:
        teardown_distributed(barrier=finished)


if __name__ == '__main__':
    main()
