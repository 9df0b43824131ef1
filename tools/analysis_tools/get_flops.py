"""Parameters and FLOPs of a detector config (mmengine's jit analysis + dat_det's counters).

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--num-images 10]
        [--show-table] [--max-depth 3] [--cfg-options k=v ...]

Without ``--shape`` the inputs are the first ``--num-images`` images of the val dataloader
after the test pipeline (FLOPs averaged over them, as mmdet's tool does); with ``--shape`` one
random image of that size. Weights are random: FLOPs do not depend on them. One FLOP is one
multiply-add; multi-scale deformable attention and scaled dot-product attention are counted
(see :mod:`dat_det.analysis.flop_handles`), element-wise ops are not.
"""
import argparse
import statistics

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.analysis.print_helper import _format_size
from mmengine.config import DictAction
from mmengine.runner import Runner

from dat_det.analysis import detector_complexity
from dat_det.analysis.inputs import dataloader_batches, random_image_batch
from dat_det.apis import preprocess
from dat_det.utils.config import load_config
from dat_det.utils.data_check import check_dataloader_datasets
from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='one random input of this size instead of dataset images')
    parser.add_argument('--num-images', type=int, default=10,
                        help='val images to average over (without --shape)')
    parser.add_argument('--show-table', action='store_true', help='per-module table')
    parser.add_argument('--max-depth', type=int, default=3, help='depth of the table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys')
    return parser.parse_args()


def input_batches(cfg, args: argparse.Namespace) -> list:
    if args.shape is not None:
        if min(args.shape) < 1:
            raise UserInputError(f'--shape must be positive, got {args.shape}')
        return [random_image_batch(*args.shape)]
    if args.num_images < 1:
        raise UserInputError(f'--num-images must be >= 1, got {args.num_images}')
    check_dataloader_datasets(cfg, ('val', ))
    loader_cfg = cfg.val_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    return list(dataloader_batches(Runner.build_dataloader(loader_cfg), args.num_images))


def main() -> None:
    args = parse_args()
    register_all_modules()
    with exit_on_user_error():
        cfg = load_config(args.config, args.cfg_options)
        batches = input_batches(cfg, args)
        model = MODELS.build(cfg.model)
    model.eval()
    reports, shapes = [], []
    for batch in batches:
        inputs, samples = preprocess(model, batch)
        shapes.append(tuple(inputs.shape[-2:]))
        with torch.no_grad():
            reports.append(detector_complexity(model, inputs, samples, args.max_depth))
    flops = statistics.mean(r.flops for r in reports)
    by_op = {op: statistics.mean(r.by_operator.get(op, 0) for r in reports)
             for op in sorted({op for r in reports for op in r.by_operator})}
    line = '=' * 40
    shape_text = f'{shapes[0]}' if len(set(shapes)) == 1 else \
        f'{len(shapes)} images, e.g. {shapes[0]}'
    print(f'{line}\nInput shape: {shape_text}\nFlops: {_format_size(int(flops))}\n'
          f'Params: {_format_size(reports[0].params)}\n{line}')
    print('Flops by operator: ' + ', '.join(f'{op} {_format_size(int(n))}'
                                            for op, n in by_op.items()))
    if args.show_table:
        print(reports[0].table)


if __name__ == '__main__':
    main()
