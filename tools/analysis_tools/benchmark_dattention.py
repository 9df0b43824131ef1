"""What DAttention costs at each place of a CNN detector: parameters, FLOPs, inference time.

    python tools/analysis_tools/benchmark_dattention.py [--models rtmdet-tiny yolox-s]
        [--places csp spp neck head] [--img-size 640 640] [--iters 5] [--warmup 1]
        [--threads N] [--clock wall|cpu] [--json results.json]

For each model, the plain detector (the ``model`` inside ``configs/dattention/``'s
``WithDAttention`` configs, i.e. mmdet's own config) and its variant with DAttention at each
place are built with random weights (speed and FLOPs do not depend on them) and measured on
one random image of ``--img-size``, batch 1, in eval mode, through the tensor-mode forward
(backbone, neck and head outputs; no box decoding or NMS):

- parameters;
- FLOPs from :func:`dat_det.analysis.detector_complexity` (mmengine's jit counter with
  dat_det's handles): one multiply-add is one FLOP; DAttention's attention
  (``scaled_dot_product_attention``, traced as one op with its position bias) and its bilinear
  sampling of keys and of the bias table (``grid_sampler``, 4 per output value) are counted,
  element-wise ops (softmax, norms, activations) are not;
- inference time, all variants of one model timed interleaved in the same run
  (:func:`dat_det.utils.timing.time_interleaved`), so that their ratios to the plain model
  hold on a shared machine; medians of ``--iters`` calls after ``--warmup`` rounds.

The places are those of ``configs/dattention/`` (README there): ``csp`` inside the residual
blocks of backbone stages 3-4, ``spp`` before the SPP block, ``neck`` after the four fusion
blocks, ``head`` on each level before the head. The device, thread count and date are
printed with the table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.utils import ProgressBar

import dat_det.models  # noqa: F401  (registers WithDAttention)
from dat_det.analysis import detector_complexity
from dat_det.analysis.inputs import random_batch
from dat_det.apis import preprocess
from dat_det.utils.timing import time_interleaved

CONFIGS = {
    'rtmdet-tiny': 'configs/dattention/rtmdet_tiny_dattention-{place}_8xb32-300e_coco.py',
    'rtmdet-s': 'configs/dattention/rtmdet_s_dattention-{place}_8xb32-300e_coco.py',
    'yolox-s': 'configs/dattention/yolox_s_dattention-{place}_8xb8-300e_coco.py',
}
PLACES = ('csp', 'spp', 'neck', 'head')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Cost of DAttention at each place')
    parser.add_argument('--models', nargs='+', choices=list(CONFIGS),
                        default=['rtmdet-tiny', 'yolox-s'])
    parser.add_argument('--places', nargs='+', choices=PLACES, default=list(PLACES))
    parser.add_argument('--img-size', type=int, nargs=2, default=[640, 640], metavar=('H', 'W'))
    parser.add_argument('--iters', type=int, default=5, help='timed calls per variant')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="wall clock, or this process's CPU time (not inflated by other "
                             'load; comparable to wall time only with one thread)')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    return parser.parse_args()


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return name


def build(model_cfg: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.eval()
    return model


def measure_model(name: str, places, args) -> list:
    """Rows of one detector: the plain model first, then one per place."""
    variants = {}
    for place in places:
        cfg = Config.fromfile(CONFIGS[name].format(place=place))
        if 'plain' not in variants:
            variants['plain'] = build(cfg.model.model)
        variants[place] = build(cfg.model)
    batch = random_batch(args.img_size, seed=0)
    inputs, samples = preprocess(variants['plain'], batch)
    rows = []
    for place, model in variants.items():
        with torch.no_grad():
            report = detector_complexity(model, inputs, samples)
        blocks = len(getattr(model, 'dattention', {}))
        rows.append(dict(model=name, place=place, blocks=blocks,
                         params=sum(p.numel() for p in model.parameters()),
                         flops=report.flops))

    def forward(model):
        def call():
            with torch.no_grad():
                model._forward(inputs)
        return call

    progress = ProgressBar(len(variants) * (args.warmup + args.iters), file=sys.stderr)
    timings = time_interleaved({p: forward(m) for p, m in variants.items()}, args.iters,
                               args.warmup, clock=args.clock, on_call=progress.update)
    sys.stderr.write('\n')
    plain = rows[0]
    for row in rows:
        row['seconds'] = timings[row['place']].median
        row['flops_ratio'] = row['flops'] / plain['flops']
        row['time_ratio'] = row['seconds'] / timings['plain'].median
    return rows


def table(rows: list) -> str:
    lines = ['| model | DAttention | blocks | params | FLOPs | FLOPs ratio | time | time ratio |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        where = 'none' if r['place'] == 'plain' else r['place']
        lines.append(f"| {r['model']} | {where} | {r['blocks']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['flops'] / 1e9:.2f} G | {r['flops_ratio']:.3f} | "
                     f"{r['seconds'] * 1e3:.0f} ms | {r['time_ratio']:.2f} |")
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit('--iters must be >= 1 and --warmup >= 0')
    register_all_modules()
    rows = []
    for name in args.models:
        rows += measure_model(name, args.places, args)
    height, width = args.img_size
    print(f'DAttention cost, input 1x3x{height}x{width}, tensor-mode inference, '
          f'{cpu_name()}, torch threads: {torch.get_num_threads()}, clock {args.clock}, median of '
          f'{args.iters} calls after {args.warmup} warm-up rounds, '
          f'{datetime.date.today().isoformat()}')
    print(table(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
