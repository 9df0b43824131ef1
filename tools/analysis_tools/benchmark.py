"""Inference latency / FPS, peak memory and training-iteration time of a detector config.

Usage:
    python tools/analysis_tools/benchmark.py CONFIG [CHECKPOINT] [--img-size 512 512]
        [--batch-size 1] [--iters 20] [--warmup 5] [--train] [--compare]
        [--device cpu|cuda] [--threads N] [--backend BACKEND] [--compile]
        [--compile-options KEY=VALUE ...] [--train-iters N] [--train-warmup N]
        [--clock wall|cpu] [--profile DIR]

Inputs are random images of ``--img-size``; without CHECKPOINT the weights are random (speed
does not depend on them, and nothing is downloaded). ``--train`` also times a full training
iteration (forward, loss, backward, clipped AdamW step) on random boxes. ``--compare`` builds
mmdet's counterpart of the config's detector (``DeformableDETR`` for ``MSDADeformableDETR``,
``DINO`` for ``MSDADINO``) from the same config, loads the same weights (converted) and
reports both, their differences and the speed ratio. The differences are taken stage by stage
(:mod:`dat_det.analysis.detector_comparison`): the encoder output, for two-stage models (DINO)
the scores and boxes of the encoder proposals before the top-k query selection, and the
detections when both decoders start from the same queries. With random weights many proposal
scores nearly tie, float rounding can rank them differently, and the decoders then start from
other queries: the tool then says how many and does not compare the detections.
``--compile`` times the model eager and under ``torch.compile`` (the same module, so the same
weights) in one run, interleaved, and reports the speed-up of the compiled one; the first
warm-up call compiles (the first training one compiles the training graphs, the backward
ones included; Hungarian matching runs in scipy, so the loss is several graphs), so with
``--compile`` two training warm-up steps are the default (``--train-warmup``). Inductor's
options default to ``freezing=True`` (graphs compiled without autograd, i.e. inference, take
the weights as constants: batch norms folded into convolutions, weights pre-packed for oneDNN;
the benchmark times inference before any training step changes the weights) and, on CPU,
``fallback_random=True`` (dropout in the compiled training graphs calls eager's random-number
generator, faster on CPU than Inductor's inlined one; see
``dat_det/engine/compile_options.py``), held as Inductor's config while the models run;
``--compile-options`` replaces them (``--compile-options freezing=False`` for none of
either), ``--compile-mode`` drops them.

Timings come from :func:`dat_det.utils.timing.time_interleaved`, shared by the benchmark
tools: warm-up rounds, then timed rounds in alternating order; ``--clock cpu`` times this
process's CPU time, which other load on a shared machine does not inflate. ``--profile DIR``
profiles one more call of each timed step (``torch.profiler``), writes its key-averages table
(operators by self time) to ``DIR/<model>_<inference|train>.txt`` and prints the shares of
the profiled CPU time spent in convolutions, dat_det's deformable attention operator (with
the work inside it), linear layers / matmuls and random numbers; with ``--compile`` also the
most a compiler that leaves those groups as eager runs them could gain (from the eager shares).
"""
import argparse
import copy
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config, DictAction
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar, import_modules_from_strings

from dat_det.analysis.detector_comparison import compare_detectors
from dat_det.analysis.inputs import random_batch
from dat_det.engine.compile_options import benchmark_inductor_options, inductor_config
from dat_det.utils.errors import exit_on_user_error
from dat_det.utils.memory import peak_rss_growth_mib
from dat_det.utils.timing import profile, time_interleaved, time_shares

# mmdet's detector with the same config schema and (converted) weights as ours
MMDET_COUNTERPARTS = {'MSDADeformableDETR': 'DeformableDETR', 'MSDADINO': 'DINO'}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark a detector config')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--img-size', type=int, nargs=2, default=[512, 512],
                        metavar=('H', 'W'))
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--train', action='store_true', help='also time training iterations')
    parser.add_argument('--compare', action='store_true',
                        help="also run mmdet's DeformableDETR / DINO with the same weights")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--backend', default=None,
                        help="backend of dat_det's deformable attention op")
    parser.add_argument('--compile', action='store_true',
                        help='also time the model under torch.compile (speed-up vs eager)')
    parser.add_argument('--compile-mode', default=None,
                        help='mode of torch.compile, e.g. max-autotune-no-cudagraphs')
    parser.add_argument('--compile-backend', default='inductor',
                        help='backend of torch.compile (aot_eager: graph capture only)')
    parser.add_argument('--compile-options', nargs='+', action=DictAction, default=None,
                        metavar='KEY=VALUE',
                        help='Inductor options of torch.compile (default: freezing=True, '
                             'and fallback_random=True on CPU; see the module docstring)')
    parser.add_argument('--train-iters', type=int, default=None,
                        help='timed training iterations (default: half of --iters)')
    parser.add_argument('--train-warmup', type=int, default=None,
                        help='untimed training iterations first (default: --warmup, at most '
                             '2; 2 with --compile, the first of which compiles)')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="wall clock, or this process's CPU time (which other load on a "
                             'shared machine does not inflate)')
    parser.add_argument('--profile', metavar='DIR', default=None,
                        help='also profile one call of each step (torch.profiler) and write '
                             'its table of operators by self time to DIR')
    parser.add_argument('--bf16', action='store_true',
                        help='run the training forward and loss under bfloat16 autocast (a '
                             'non-finite loss stops the benchmark)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def timed(fns: Sequence[Callable[[], object]], iters: int, warmup: int, device: str,
          clock: str = 'wall') -> List[Dict[str, Optional[float]]]:
    """Median/min/mean seconds of each of ``fns`` after ``warmup`` rounds, peak memory (MiB):
    CUDA memory allocated during a call, or on CPU the growth of resident memory over one call
    (a lower bound: memory the allocator kept from earlier calls is reused, not counted; None
    where the RSS high-water mark cannot be reset).

    The functions are timed interleaved (:func:`dat_det.utils.timing.time_interleaved`),
    so that a busy machine slows them alike and their ratio stays meaningful; on a shared
    machine the minimum is the least disturbed estimate.
    """
    progress = ProgressBar(len(fns) * (warmup + iters), file=sys.stderr)  # stdout: results
    timings = time_interleaved(dict(enumerate(fns)), iters, warmup, device, clock=clock,
                               track_cuda_memory=True, on_call=progress.update)
    sys.stderr.write('\n')
    peaks = [timings[i].peak_cuda_mib for i in range(len(fns))]
    if not device.startswith('cuda'):  # one more call each, outside the timing: its growth
        peaks = [peak_rss_growth_mib(fn)[1] for fn in fns]
    return [dict(median=timings[i].median, min=timings[i].min, mean=timings[i].mean,
                 peak_mib=peak) for i, peak in enumerate(peaks)]


def num_classes(model: torch.nn.Module) -> int:
    """Classes of the detector's box head (a one-stage / DETR ``bbox_head``, or the R-CNN
    ``roi_head``'s, its first stage's for cascades); 1 when no head says."""
    for head_name in ('bbox_head', 'roi_head'):
        head = getattr(model, head_name, None)
        if head is None:
            continue
        if head_name == 'roi_head':
            head = head.bbox_head[0] if isinstance(head.bbox_head, torch.nn.ModuleList) \
                else head.bbox_head
        if hasattr(head, 'num_classes'):
            return int(head.num_classes)
    return 1


def inference_step(model: torch.nn.Module, batch: Dict) -> Callable[[], list]:
    """Preprocess + predict, without gradients."""
    def step():
        with torch.no_grad():
            data = model.data_preprocessor(copy.deepcopy(batch), False)
            return model(**data, mode='predict')
    return step


def train_step(model: torch.nn.Module, batch: Dict, bf16: bool = False) -> Callable[[], None]:
    """Preprocess, loss (under bfloat16 autocast if ``bf16``), backward, gradient clipping
    at 0.1 and an AdamW step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    device_type = next(model.parameters()).device.type

    def step():
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        if bf16 and not torch.isfinite(loss):
            raise RuntimeError(f'non-finite loss under bfloat16 autocast: {loss.item()}')
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optim.step()
    return step


def report_linear_dtype(model: torch.nn.Module, step: Callable[[], None]) -> None:
    """Run ``step`` once and print the dtype of the first linear layer's output in it (what
    autocast made of it)."""
    linear = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
    if linear is None:
        return
    dtypes: List[torch.dtype] = []
    handle = linear.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    try:
        step()
    finally:
        handle.remove()
    print(f'first linear layer output in training: {dtypes[0] if dtypes else "not called"}')


def bench_models(models: Sequence[torch.nn.Module], batch: Dict, args: argparse.Namespace,
                 names: Optional[Sequence[str]] = None) -> List[Dict]:
    """Inference (and training) timings of ``models`` on the same ``batch``; with
    ``args.profile`` also one profiled call of each step (tables written there, shares of
    operator groups stored under ``'shares'``)."""
    results: List[Dict] = [{'shares': {}} for _ in models]
    names = names or [f'model{i}' for i in range(len(models))]
    for model in models:
        model.eval()
    steps = [inference_step(model, batch) for model in models]
    timings = timed(steps, args.iters, args.warmup, args.device, args.clock)
    for result, timing, step in zip(results, timings, steps):
        result['inference'] = timing
        result['outputs'] = step()
    profile_steps(steps, names, results, 'inference', args)
    if args.train:
        if args.bf16:
            print('training under bfloat16 autocast')
        for model in models:
            model.train()
        steps = [train_step(model, batch, args.bf16) for model in models]
        if args.bf16:
            report_linear_dtype(models[0], steps[0])
        train_warmup = args.train_warmup
        if train_warmup is None:  # compiled: the first step compiles, the second is steady
            train_warmup = 2 if args.compile else min(args.warmup, 2)
        train_iters = args.train_iters if args.train_iters is not None else max(args.iters // 2, 1)
        timings = timed(steps, train_iters, train_warmup, args.device, args.clock)
        for result, timing in zip(results, timings):
            result['train'] = timing
        profile_steps(steps, names, results, 'train', args)
    return results


def _slug(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-.' else '_' for c in name).strip('_')


def profile_steps(steps: Sequence[Callable[[], object]], names: Sequence[str],
                  results: List[Dict], phase: str, args: argparse.Namespace) -> None:
    """With ``--profile DIR``: one profiled call of each step, its key-averages table written
    to ``DIR/<model>_<phase>.txt`` and its operator-group shares kept in the results."""
    if not args.profile:
        return
    for step, name, result in zip(steps, names, results):
        path = Path(args.profile) / f'{_slug(name)}_{phase}.txt'
        _, events = profile(step, args.device, path=path)
        result['shares'][phase] = time_shares(events)
        print(f'profile of {name}, {phase}, written to {path}', file=sys.stderr)


def _mib(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.0f} MiB'


def report(name: str, results: Dict[str, Dict], batch_size: int) -> None:
    inf = results['inference']
    print(f'[{name}] inference: {inf["median"] * 1e3:.1f} ms/batch (min '
          f'{inf["min"] * 1e3:.1f}, mean {inf["mean"] * 1e3:.1f}), '
          f'{batch_size / inf["median"]:.2f} img/s, '
          f'peak memory {_mib(inf["peak_mib"])}')
    if 'train' in results:
        tr = results['train']
        print(f'[{name}] train iteration: {tr["median"] * 1e3:.1f} ms (min '
              f'{tr["min"] * 1e3:.1f}, mean {tr["mean"] * 1e3:.1f}), '
              f'peak memory {_mib(tr["peak_mib"])}')
    for phase, shares in results.get('shares', {}).items():
        groups = ', '.join(f'{group} {share:.0%}' for group, share in shares.items()
                           if group != 'total_ms')
        print(f'[{name}] profiled {phase}: {shares["total_ms"]:.0f} ms CPU time; {groups}')


def max_output_diff(ours: List[DetDataSample], theirs: List[DetDataSample]) -> float:
    return max(max((a.pred_instances.scores - b.pred_instances.scores).abs().max().item(),
                   (a.pred_instances.bboxes - b.pred_instances.bboxes).abs().max().item())
               for a, b in zip(ours, theirs))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare and args.compile:
        raise SystemExit('--compare and --compile are exclusive: run them separately')
    with exit_on_user_error():
        options = benchmark_inductor_options(
            args.device, args.compile_options, args.compile_mode, args.compile_backend
        ) if args.compile else {}
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    if args.backend is not None:
        cfg.model.msda_backend = args.backend

    torch.manual_seed(0)
    # DeformableDETR.__init__ writes into its bbox_head config: keep cfg.model pristine
    model = MODELS.build(copy.deepcopy(cfg.model))
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.to(args.device)
    print(f'{args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, '
          f'input {args.batch_size}x3x{args.img_size[0]}x{args.img_size[1]} on {args.device}, '
          f'{torch.get_num_threads()} CPU threads')
    batch = random_batch(args.img_size, args.batch_size, num_classes(model), num_boxes=5,
                         with_masks=getattr(model, 'with_mask', False))
    models, names = [model], [cfg.model.type]
    if args.compile:
        models.append(torch.compile(model, mode=args.compile_mode,
                                    backend=args.compile_backend))
        names.append(f'{cfg.model.type} (torch.compile)')
    comparison = None
    if args.compare:
        reference = mmdet_counterpart(cfg, model).to(args.device)
        models.append(reference)
        names.append(f'mmdet {type(reference).__name__}')
        model.eval()
        reference.eval()
        comparison = compare_detectors(model, reference, batch)  # before training moves them
    if options:
        print(f'Inductor options: {options}')
    with inductor_config(options):
        results = bench_models(models, batch, args, names)
    for name, result in zip(names, results):
        report(name, result, args.batch_size)
    if comparison is not None:
        print('\n'.join(comparison.summary('ours', 'mmdet')))
        print_speedup(results[0], results[1], 'ours', 'mmdet')
    if args.compile:
        print(f'max |compiled - eager| over scores and boxes: '
              f'{max_output_diff(results[1]["outputs"], results[0]["outputs"]):.2e}')
        print_speedup(results[1], results[0], 'compiled', 'eager')
        print_compile_bound(results[0])


def mmdet_counterpart(cfg: Config, model: torch.nn.Module) -> torch.nn.Module:
    """mmdet's detector of the config's schema (:data:`MMDET_COUNTERPARTS`) with ``model``'s
    weights converted."""
    from dat_det.models.checkpoint import to_mmdet
    if cfg.model.type not in MMDET_COUNTERPARTS:
        sys.exit(f'error: --compare needs one of {sorted(MMDET_COUNTERPARTS)}, the config '
                 f'builds {cfg.model.type}')
    mmdet_cfg = copy.deepcopy(cfg.model)
    mmdet_cfg.type = MMDET_COUNTERPARTS[cfg.model.type]
    mmdet_cfg.pop('msda_backend', None)
    reference = MODELS.build(mmdet_cfg)
    reference.load_state_dict(to_mmdet(model.state_dict()), strict=True)
    return reference


def print_compile_bound(eager: Dict) -> None:
    """With ``--profile``: the speed-up a compiler could reach at most if it ran the profiled
    operator groups (convolutions, GEMMs, dat_det's operator, random numbers: calls into
    oneDNN / BLAS / the operator's own kernels either way) as eager does and everything else in
    no time."""
    for phase, shares in eager.get('shares', {}).items():
        grouped = sum(v for k, v in shares.items() if k != 'total_ms')
        print(f'eager {phase}: {grouped:.0%} of the profiled CPU time is in the operator '
              f'groups; a compiled model that runs them as eager does is at most '
              f'{1 / max(grouped, 1e-9):.2f}x faster')


def print_speedup(ours: Dict, theirs: Dict, our_name: str, their_name: str) -> None:
    """Speed ratios (medians and minima) of two result dicts."""
    for key in ('inference', 'train'):
        if key in ours:
            median = theirs[key]['median'] / ours[key]['median']
            best = theirs[key]['min'] / ours[key]['min']
            print(f'speed-up of {our_name} over {their_name}, {key}: {median:.2f}x (medians), '
                  f'{best:.2f}x (minima)')


if __name__ == '__main__':
    main()
