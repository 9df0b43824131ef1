"""Evaluate a checkpoint with mmengine's Runner (COCO metrics for COCO configs).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                         [--show-dir DIR] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
"""
import argparse
import os

from mmdet.evaluation import DumpDetResults
from mmengine.config import DictAction

from dat_det.engine import build_runner, build_test_config, teardown_distributed
from dat_det.utils.errors import UserInputError, exit_on_stopped_run, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show-dir', help='draw predictions next to ground truth into this '
                        'folder (relative to the work dir\'s timestamp folder)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='score threshold of drawn predictions')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys, e.g. test_dataloader.batch_size=4')
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
            if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
                raise UserInputError(f'--out must be a .pkl file, got {args.out}')
            cfg = build_test_config(args.config, args.checkpoint, work_dir=args.work_dir,
                                    cfg_options=args.cfg_options, launcher=args.launcher,
                                    show_dir=args.show_dir, score_thr=args.score_thr)
            runner = build_runner(cfg)
        if args.out:
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        with exit_on_stopped_run():
            runner.test()
        finished = True
    finally:
        teardown_distributed(barrier=finished)


if __name__ == '__main__':
    main()
