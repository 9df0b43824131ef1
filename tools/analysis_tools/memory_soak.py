"""Memory soak: train a config for many iterations and report how resident memory grows.

    python tools/analysis_tools/memory_soak.py [CONFIG] [--iters 2000] [--start 200]
        [--batch-size 2] [--workers 2] [--data-root data/shapes] [--max-growth 5]

Trains CONFIG (default: the demo's DAT++ + two-stage Deformable DETR) with an iteration-based
loop, no validation and no checkpoints, and samples the resident set size (RSS) of the training
process and of its data-loader workers every ``--every`` iterations (and, on a GPU, the
allocated CUDA memory). Prints the samples and the growth between iteration ``--start`` and the
last one; exits with status 1 when the training process grew by more than ``--max-growth`` %.
Without the data at ``--data-root`` a small shapes dataset is generated in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import tempfile

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from dat_det.engine import build_runner
from dat_det.utils.config import load_config

DEFAULT_CONFIG = 'configs/demo/deformable-detr-refine-twostage_dat++-pico_shapes.py'


def rss_mib(pid: int | str = 'self') -> float:
    """Resident set size of a process in MiB (Linux ``/proc``)."""
    with open(f'/proc/{pid}/status') as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith('VmRSS'))
    return kib / 1024


def children_rss_mib() -> float:
    """Summed RSS of this process's direct children (the data-loader workers)."""
    total = 0.0
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{task}/children') as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                total += rss_mib(pid)
            except (OSError, StopIteration):
                pass
    return total


@HOOKS.register_module()
class RSSSamplerHook(Hook):
    """Records (iteration, RSS, workers' RSS, CUDA allocated) every ``every`` iterations."""

    priority = 'LOWEST'

    def __init__(self, every: int = 100, first: int = 1) -> None:
        self.every, self.first = every, first
        self.samples: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        it = runner.iter + 1
        if it == self.first or it % self.every == 0:
            sample = dict(iter=it, rss_mib=round(rss_mib(), 1),
                          workers_rss_mib=round(children_rss_mib(), 1))
            if torch.cuda.is_available():
                sample['cuda_allocated_mib'] = round(torch.cuda.memory_allocated() / 2**20, 1)
            self.samples.append(sample)
            print(json.dumps(sample), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--start', type=int, default=200,
                        help='iteration whose memory the growth is measured against')
    parser.add_argument('--every', type=int, default=100, help='sampling period (iterations)')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--data-root', default='data/shapes')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--max-growth', type=float, default=5.0, help='percent')
    parser.add_argument('--json', help='write the samples and the verdict here')
    args = parser.parse_args()
    if not 0 < args.start < args.iters or args.start % args.every or args.iters % args.every:
        parser.error('need 0 < --start < --iters, both multiples of --every')
    return args


def soak_config(args: argparse.Namespace, data_root: str, work_dir: str):
    cfg = load_config(args.config)
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters, val_interval=10**9)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = None
    loader = cfg.train_dataloader
    loader.update(batch_size=args.batch_size, num_workers=args.workers,
                  persistent_workers=args.workers > 0)
    loader.dataset.data_root = data_root.rstrip('/') + '/'
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=args.every)
    cfg.custom_hooks = [dict(type='RSSSamplerHook', every=args.every)]
    cfg.log_processor = dict(by_epoch=False)
    return cfg


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root
        if not osp.isfile(osp.join(data_root, 'annotations', 'instances_train.json')):
            from dat_det.datasets import ShapesConfig, generate_shapes_dataset
            data_root = osp.join(tmp, 'shapes')
            generate_shapes_dataset(data_root, ShapesConfig(num_train=64, num_val=4, seed=3))
        runner = build_runner(soak_config(args, data_root, args.work_dir or osp.join(tmp, 'w')))
        runner.train()
        samples = next(h for h in runner.hooks if isinstance(h, RSSSamplerHook)).samples
    by_iter = {s['iter']: s for s in samples}
    first, last = by_iter[args.start], by_iter[args.iters]
    growth = 100 * (last['rss_mib'] - first['rss_mib']) / first['rss_mib']
    workers = (100 * (last['workers_rss_mib'] - first['workers_rss_mib'])
               / first['workers_rss_mib']) if first['workers_rss_mib'] else None
    verdict = dict(config=args.config, iters=args.iters, start=args.start,
                   batch_size=args.batch_size, workers=args.workers,
                   rss_start_mib=first['rss_mib'], rss_end_mib=last['rss_mib'],
                   rss_growth_pct=round(growth, 2),
                   workers_rss_growth_pct=None if workers is None else round(workers, 2),
                   max_growth_pct=args.max_growth, ok=growth <= args.max_growth)
    if 'cuda_allocated_mib' in first:
        verdict['cuda_allocated_growth_mib'] = round(
            last['cuda_allocated_mib'] - first['cuda_allocated_mib'], 1)
    print(f"RSS of the training process: {first['rss_mib']:.1f} MiB at iteration {args.start}, "
          f"{last['rss_mib']:.1f} MiB at iteration {args.iters}: {growth:+.2f}% "
          f"(limit {args.max_growth}%)")
    if workers is not None:
        print(f"RSS of the data-loader workers: {first['workers_rss_mib']:.1f} -> "
              f"{last['workers_rss_mib']:.1f} MiB ({workers:+.2f}%)")
    print(json.dumps(verdict))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(verdict, samples=samples), f, indent=1)
    sys.exit(0 if verdict['ok'] else 1)


if __name__ == '__main__':
    main()
