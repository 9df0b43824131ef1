"""RTMDet-tiny with and without DAttention, trained from scratch on the generated shapes data.

    python tools/analysis_tools/dattention_shapes_comparison.py [--places none csp spp neck head]
        [--seeds 0 1 2] [--work-dir work_dirs/dattention_shapes] [--data data/shapes]
        [--epochs N] [--json results.json]

Trains ``configs/dattention/shapes/rtmdet_tiny_shapes.py`` (``none``) and its variants with
DAttention at each place (``rtmdet_tiny_dattention-{place}_shapes.py``) once per seed
(``randomness.seed``: weights, data order and augmentation), each with ``tools/train.py`` in
its own process, one run after the other, all on the same schedule; the bbox mAP on the val
split after the last epoch is read from each run's log. Runs whose results exist in the work
dir are not repeated, so an interrupted comparison continues where it stopped. The dataset
is generated (``tools/misc/generate_shapes_dataset.py``, fixed seed) when ``--data`` has
none. Prints, per place, the mAP of each seed, their mean and the mean difference to
``none``, with each run's wall time and the load average of the machine at start and end
(other processes slow a shared machine down; they do not change the results).

``--epochs`` shortens the schedule (the cosine decay follows) for a quick check; the reported
comparison uses the config's schedule.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs' / 'dattention' / 'shapes'
PLACES = ('none', 'csp', 'spp', 'neck', 'head')
METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s',
           'coco/bbox_mAP_m', 'coco/bbox_mAP_l')
EMPTY_RESULTS = 'The testing results of the whole dataset is empty'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--places', nargs='+', choices=PLACES, default=list(PLACES))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--work-dir', default='work_dirs/dattention_shapes')
    parser.add_argument('--data', default='data/shapes', help='shapes dataset folder')
    parser.add_argument('--epochs', type=int, default=None,
                        help='shorter schedule for a quick check (default: the config)')
    parser.add_argument('--json', default=None, help='also write all results to this file')
    return parser.parse_args()


def config_of(place: str) -> Path:
    name = 'rtmdet_tiny_shapes.py' if place == 'none' else \
        f'rtmdet_tiny_dattention-{place}_shapes.py'
    return CONFIG_DIR / name


def ensure_data(data: Path) -> None:
    if (data / 'annotations' / 'instances_val.json').is_file():
        return
    subprocess.run([sys.executable, str(REPO / 'tools' / 'misc' / 'generate_shapes_dataset.py'),
                    '--out', str(data)], check=True, cwd=REPO)


def final_metrics(work_dir: Path) -> dict:
    """The last validation metrics in the run's ``vis_data/scalars.json``; all 0 when mmdet's
    ``CocoMetric`` reported that the model detected nothing (it then logs no metric)."""
    found = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if METRICS[0] in record:
                found = {k: record[k] for k in METRICS if k in record}
    if found:
        return found
    if any(EMPTY_RESULTS in log.read_text() for log in work_dir.glob('*/*.log')):
        return dict.fromkeys(METRICS, 0.0)
    raise RuntimeError(f'no validation metrics in the logs of {work_dir}')


def train(place: str, seed: int, args: argparse.Namespace) -> dict:
    work_dir = Path(args.work_dir) / f'{place}_seed{seed}'
    result_file = work_dir / 'result.json'
    if result_file.is_file():
        return json.loads(result_file.read_text())
    data = str(Path(args.data).resolve()) + '/'
    options = [f'randomness.seed={seed}', f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}',
               f'val_evaluator.ann_file={data}annotations/instances_val.json',
               f'test_evaluator.ann_file={data}annotations/instances_val.json']
    if args.epochs:
        options += [f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
                    f'param_scheduler.1.end={args.epochs}',
                    f'default_hooks.checkpoint.interval={args.epochs}']
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), str(config_of(place)),
           '--work-dir', str(work_dir), '--cfg-options', *options]
    load_start, start = os.getloadavg()[0], time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f'training {place} seed {seed} failed:\n{proc.stderr[-3000:]}')
    result = dict(place=place, seed=seed, config=str(config_of(place).relative_to(REPO)),
                  epochs=args.epochs, wall_s=round(wall, 1), load_start=load_start,
                  load_end=os.getloadavg()[0], **final_metrics(work_dir))
    result_file.write_text(json.dumps(result, indent=1))
    return result


def table(results: list, places: list, seeds: list) -> str:
    by = {(r['place'], r['seed']): r for r in results}
    header = ' | '.join(f'seed {s}' for s in seeds)
    lines = [f'| DAttention | bbox mAP: {header} | mean | vs none | AP50 mean | wall time |',
             '|---|' + '---|' * (len(seeds) + 4)]
    base = [by[('none', s)]['coco/bbox_mAP'] for s in seeds] if 'none' in places else None
    for place in places:
        maps = [by[(place, s)]['coco/bbox_mAP'] for s in seeds]
        ap50 = statistics.mean(by[(place, s)]['coco/bbox_mAP_50'] for s in seeds)
        delta = '' if base is None or place == 'none' else \
            f'{statistics.mean(m - b for m, b in zip(maps, base)):+.3f}'
        wall = sum(by[(place, s)]['wall_s'] for s in seeds) / 60
        lines.append(f"| {place} | {' | '.join(f'{m:.3f}' for m in maps)} | "
                     f'{statistics.mean(maps):.3f} | {delta} | {ap50:.3f} | '
                     f'{wall:.0f} min |')
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    ensure_data(Path(args.data))
    results = []
    for seed in args.seeds:
        for place in args.places:
            result = train(place, seed, args)
            results.append(result)
            print(f"{place} seed {seed}: bbox mAP {result['coco/bbox_mAP']:.3f} "
                  f"({result['wall_s'] / 60:.1f} min, load {result['load_start']:.1f} -> "
                  f"{result['load_end']:.1f})", flush=True)
    print(table(results, args.places, args.seeds))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
