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

from mmengine.config import DictAction

from dat_det.engine import build_runner, build_train_config, teardown_distributed
from dat_det.utils.errors import exit_on_stopped_run, exit_on_user_error


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


def main() -> None:
    args = parse_args()
    finished = False
    try:
        with exit_on_user_error():
            cfg, notes = build_train_config(
                args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                launcher=args.launcher, amp=args.amp, auto_scale_lr=args.auto_scale_lr,
                resume=args.resume)
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
