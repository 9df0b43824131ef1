"""Curves and iteration time from mmengine json logs (``<timestamp>/vis_data/*.json``).

    python tools/analysis_tools/analyze_logs.py plot_curve LOG.json [LOG.json ...]
        [--keys loss lr coco/bbox_mAP] [--legend A B] [--title T] [--out curves.png]
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG.json [LOG.json ...]

Training keys (``loss``, ``loss_cls``, ``lr``...) are plotted over iterations, validation
metrics (``coco/bbox_mAP``...) over the validation step (the epoch for epoch-based runs).
"""
import argparse
import os.path as osp

from dat_det.utils.errors import UserInputError, exit_on_user_error
from dat_det.visualization.logs import iteration_time, load_json_log, plot_curves


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyze mmengine json logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot curves of some keys to a PNG')
    plot.add_argument('json_logs', nargs='+')
    plot.add_argument('--keys', nargs='+', default=['loss', 'lr'])
    plot.add_argument('--legend', nargs='+', help='one name per log (default: file names)')
    plot.add_argument('--title', default='')
    plot.add_argument('--out', default='curves.png')
    timing = sub.add_parser('cal_train_time', help='mean time of a training iteration')
    timing.add_argument('json_logs', nargs='+')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        logs = [load_json_log(path) for path in args.json_logs]
        if args.task == 'cal_train_time':
            for log in logs:
                stats = iteration_time(log)
                print(f'{log.path}\n  mean iteration time: {stats["mean"]:.4f} s '
                      f'(std {stats["std"]:.4f}); slowest epoch {stats["slowest_epoch"]}, '
                      f'fastest epoch {stats["fastest_epoch"]}')
            return
        legends = args.legend or [osp.basename(p) for p in args.json_logs]
        if len(legends) != len(logs):
            raise UserInputError(f'--legend has {len(legends)} names for {len(logs)} logs')
        if not osp.isdir(osp.dirname(osp.abspath(args.out))):
            raise UserInputError(f'output folder not found: {osp.dirname(args.out)}')
        plot_curves(logs, args.keys, legends, args.title).savefig(args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
