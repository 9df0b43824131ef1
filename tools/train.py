"""Train a detector with mmengine's Runner (mmdet 3.x style).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
                          [--auto-scale-lr] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

from dat_det.engine import build_runner, set_work_dir, teardown_distributed
from dat_det.utils.checkpoint_compat import allow_mmengine_checkpoints
from dat_det.utils.config import load_config
from dat_det.utils.data_check import check_dataloader_datasets
from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
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


def build_cfg(args: argparse.Namespace):
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserInputError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                                 'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise UserInputError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    check_dataloader_datasets(cfg, ('train', 'val'))
    return cfg


def main() -> None:
    args = parse_args()
    allow_mmengine_checkpoints()
    with exit_on_user_error():
        cfg = build_cfg(args)
        runner = build_runner(cfg)
    runner.train()
    teardown_distributed()


if __name__ == '__main__':
    main()
