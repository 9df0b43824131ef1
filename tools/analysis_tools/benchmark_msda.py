"""Benchmark multi-scale deformable attention backends against mmcv.

Times forward (under ``torch.no_grad``) and forward + backward of every backend that runs on
the device, and of mmcv's op (its compiled CUDA op where built, and its PyTorch path), at the
Deformable DETR encoder shape (B=2, 8 heads x 32 channels, levels 100x150, 50x75, 25x38,
13x19, 4 points, one query per pixel) and decoder shape (300 queries). Sampling locations are
reference points plus offsets of a few pixels, as in the model. Each backend's output and
gradients are also compared (relative L2 error) with the float64 reference on the same inputs.
Timings are medians over rounds that interleave the candidates (robust to a shared machine);
peak memory (CUDA only) is that of one forward + backward above what was allocated before.

Examples::

    python tools/analysis_tools/benchmark_msda.py --device cpu --scale 4
    python tools/analysis_tools/benchmark_msda.py --device cuda --dtype bfloat16 --json out.json

Works with torch alone (then the mmcv rows are skipped).
"""
import argparse
import functools
import json
import math
import platform
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from dat_det.ops import available_backends, multi_scale_deformable_attn
from dat_det.utils.timing import time_interleaved

BASE_LEVELS = ((100, 150), (50, 75), (25, 38), (13, 19))
BATCH, HEADS, CHANNELS, POINTS, DECODER_QUERIES = 2, 8, 32, 4, 300
OFFSET_STD_PIXELS = 2.0
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}

OpFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='float32')
    parser.add_argument('--scale', type=int, default=1,
                        help='divide every level side by this (rounded up), e.g. 4 on CPU')
    parser.add_argument('--shapes', nargs='+', choices=['encoder', 'decoder'],
                        default=['encoder', 'decoder'])
    parser.add_argument('--repeat', type=int, default=None,
                        help='timed runs per measurement (median reported); '
                        'default 20 on CUDA, 5 on CPU')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--backends', nargs='+', default=None,
                        help='subset of dat_det backends and mmcv_cuda[_fp32] / mmcv_pytorch')
    parser.add_argument('--json', default=None, help='write the results to this file')
    return parser.parse_args()


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{model} ({torch.get_num_threads()} threads)'


def make_inputs(kind: str, scale: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> Dict[str, Tensor]:
    """Encoder inputs (one query per pixel) or decoder inputs (300 random references)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(math.ceil(h / scale), math.ceil(w / scale)) for h, w in BASE_LEVELS]
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_values = int(sizes.sum())
    if kind == 'encoder':
        references = torch.cat([_pixel_centres(h, w) for h, w in shapes])  # (S, 2)
        references = references.expand(BATCH, -1, -1)
    else:
        references = torch.rand(BATCH, DECODER_QUERIES, 2, generator=generator) * 0.9 + 0.05
    num_queries = references.shape[1]
    levels = len(shapes)
    # offsets of a few pixels of the sampled level, normalized by that level's (W, H)
    level_size = spatial_shapes.flip(-1).to(torch.float32).view(levels, 1, 2)
    offsets = torch.randn(BATCH, num_queries, HEADS, levels, POINTS, 2,
                          generator=generator) * OFFSET_STD_PIXELS / level_size
    locations = references.view(BATCH, num_queries, 1, 1, 1, 2) + offsets
    logits = torch.randn(BATCH, num_queries, HEADS, levels * POINTS, generator=generator)
    weights = logits.softmax(-1).view(BATCH, num_queries, HEADS, levels, POINTS)
    value = torch.randn(BATCH, num_values, HEADS, CHANNELS, generator=generator)
    return dict(value=value.to(device, dtype), spatial_shapes=spatial_shapes.to(device),
                level_start_index=level_start_index.to(device),
                sampling_locations=locations.to(device, dtype),
                attention_weights=weights.to(device, dtype))


def _pixel_centres(height: int, width: int) -> Tensor:
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height,
                            (torch.arange(width) + 0.5) / width, indexing='ij')
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def candidate_ops(device: torch.device, dtype: torch.dtype) -> Dict[str, OpFn]:
    """dat_det backends runnable on ``device`` plus mmcv's ops when importable.

    mmcv's CUDA op has no bfloat16 kernel: for bfloat16 it runs on float32 copies (the casts
    are timed, as a bfloat16 model would pay them), and its row says so.
    """
    ops: Dict[str, OpFn] = {}
    for name in available_backends(device):
        ops[name] = functools.partial(_dat_det_op, backend=name)
    try:
        from mmcv.ops.multi_scale_deform_attn import (
            MultiScaleDeformableAttnFunction,
            multi_scale_deformable_attn_pytorch,
        )
    except ImportError:
        return ops
    if device.type == 'cuda' and mmcv_has_cuda_ops():
        def mmcv_cuda(value, shapes, starts, locations, weights):
            if dtype == torch.bfloat16:
                value, locations, weights = value.float(), locations.float(), weights.float()
            out = MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations,
                                                         weights, 64)
            return out.to(dtype)

        ops['mmcv_cuda_fp32' if dtype == torch.bfloat16 else 'mmcv_cuda'] = mmcv_cuda
    ops['mmcv_pytorch'] = lambda value, shapes, starts, locations, weights: (
        multi_scale_deformable_attn_pytorch(value, shapes, locations, weights))
    return ops


def mmcv_has_cuda_ops() -> bool:
    """Whether mmcv was compiled with its CUDA ops (a CPU-only build imports fine but its
    compiled op fails on CUDA tensors)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError:
        return False
    return get_compiling_cuda_version() != 'not available'


def _dat_det_op(value: Tensor, shapes: Tensor, starts: Tensor, locations: Tensor,
                weights: Tensor, backend: str) -> Tensor:
    return multi_scale_deformable_attn(value, shapes, starts, locations, weights,
                                       backend=backend)


def time_ms(fns: Dict[str, Callable[[], object]], device: torch.device, repeat: int,
            warmup: int) -> Dict[str, float]:
    """Median time in ms of each function (CUDA events on a GPU, wall clock otherwise); rounds
    interleave the functions so that a load change on a shared machine hits all of them
    alike."""
    clock = 'cuda-events' if device.type == 'cuda' else 'wall'
    timings = time_interleaved(fns, repeat, warmup, device, clock=clock)
    return {name: timing.median * 1e3 for name, timing in timings.items()}


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Peak CUDA memory of one call above what was allocated before it (None on CPU)."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def run_op(op: OpFn, inputs: Dict[str, Tensor], grad_out: Optional[Tensor]) -> List[Tensor]:
    """Forward (and backward when ``grad_out`` is given); returns output and gradients."""
    args = [inputs[k] for k in ('value', 'spatial_shapes', 'level_start_index',
                                'sampling_locations', 'attention_weights')]
    if grad_out is None:
        with torch.no_grad():
            return [op(*args)]
    leaves = [args[0], args[3], args[4]]
    for leaf in leaves:
        leaf.requires_grad_(True)
        leaf.grad = None
    out = op(*args)
    out.backward(grad_out)
    return [out.detach()] + [leaf.grad for leaf in leaves]


def relative_errors(results: List[Tensor], reference: List[Tensor]) -> List[float]:
    """``|result - reference| / |reference|`` (L2 norms) of output and gradients.

    Norms, not max errors: the location gradient of bilinear sampling jumps where a sample
    crosses a pixel centre, so among millions of samples a few land on the other side after
    rounding to float32 in any implementation.
    """
    return [float((r.double() - e).norm() / e.norm().clamp_min(1e-12))
            for r, e in zip(results, reference)]


def benchmark_shape(kind: str, args: argparse.Namespace, device: torch.device,
                    dtype: torch.dtype, ops: Dict[str, OpFn], repeat: int) -> List[dict]:
    inputs = make_inputs(kind, args.scale, device, dtype)
    num_queries = inputs['sampling_locations'].shape[1]
    grad_out = torch.randn(BATCH, num_queries, HEADS * CHANNELS,
                           generator=torch.Generator().manual_seed(1)).to(device, dtype)
    reference_inputs = {k: (v.double().cpu() if v.is_floating_point() else v.cpu())
                        for k, v in inputs.items()}
    reference = run_op(lambda *a: multi_scale_deformable_attn(*a, backend='gather'),
                       reference_inputs, grad_out.double().cpu())
    rows, forward, forward_backward = [], {}, {}
    for name, op in ops.items():
        row = dict(shape=kind, backend=name, queries=num_queries)
        try:
            errors = relative_errors(run_op(op, inputs, grad_out), reference)
        except (RuntimeError, NotImplementedError, ValueError) as error:
            row['error'] = str(error).split('\n')[0][:120]
        else:
            row['rel_err'] = dict(zip(('out', 'value', 'loc', 'attn'), errors))
            forward[name] = functools.partial(run_op, op, inputs, None)
            forward_backward[name] = functools.partial(run_op, op, inputs, grad_out)
            for tensor in inputs.values():
                tensor.grad = None
            row['peak_mb'] = peak_memory_mb(forward_backward[name], device)
        rows.append(row)
    fwd_ms = time_ms(forward, device, repeat, args.warmup)
    fwd_bwd_ms = time_ms(forward_backward, device, repeat, args.warmup)
    for row in rows:
        if row['backend'] in fwd_ms:
            row['fwd_ms'] = fwd_ms[row['backend']]
            row['fwd_bwd_ms'] = fwd_bwd_ms[row['backend']]
    peer = next((r for r in rows if r['backend'].startswith('mmcv_cuda')
                 and 'error' not in r), None)
    peer = peer or next((r for r in rows if r['backend'] == 'mmcv_pytorch'
                         and 'error' not in r), None)
    for row in rows:
        if peer is not None and 'error' not in row:
            row['peer'] = peer['backend']
            row['fwd_speedup'] = peer['fwd_ms'] / row['fwd_ms']
            row['fwd_bwd_speedup'] = peer['fwd_bwd_ms'] / row['fwd_bwd_ms']
    return rows


def format_table(rows: List[dict]) -> str:
    header = (f"{'shape':8} {'Lq':>6} {'backend':15} {'fwd ms':>9} {'fwd+bwd ms':>11} "
              f"{'peak MB':>8} {'x fwd':>6} {'x f+b':>6} {'rel err':>9}  vs")
    lines = [header, '-' * len(header)]
    for r in rows:
        if 'error' in r:
            lines.append(f"{r['shape']:8} {r['queries']:>6} {r['backend']:15} error: "
                         f"{r['error']}")
            continue
        peak = f"{r['peak_mb']:.0f}" if r.get('peak_mb') is not None else '-'
        fwd_x = f"{r['fwd_speedup']:.2f}" if 'fwd_speedup' in r else '-'
        fb_x = f"{r['fwd_bwd_speedup']:.2f}" if 'fwd_bwd_speedup' in r else '-'
        err = max(r['rel_err'].values())
        lines.append(f"{r['shape']:8} {r['queries']:>6} {r['backend']:15} {r['fwd_ms']:9.3f} "
                     f"{r['fwd_bwd_ms']:11.3f} {peak:>8} {fwd_x:>6} {fb_x:>6} {err:9.1e}  "
                     f"{r.get('peer', '-')}")
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    repeat = args.repeat or (20 if device.type == 'cuda' else 5)
    ops = candidate_ops(device, dtype)
    if args.backends:
        ops = {k: v for k, v in ops.items() if k in args.backends}
    levels = [(math.ceil(h / args.scale), math.ceil(w / args.scale)) for h, w in BASE_LEVELS]
    print(f'device: {device_name(device)}; dtype {args.dtype}; torch {torch.__version__}; '
          f'levels {levels}; B={BATCH} heads={HEADS} C={CHANNELS} points={POINTS}; '
          f'median of {repeat}; speedups (x) are relative to mmcv in this run')
    rows: List[dict] = []
    for kind in args.shapes:
        rows += benchmark_shape(kind, args, device, dtype, ops, repeat)
    print(format_table(rows))
    if args.json:
        meta = dict(device=device_name(device), dtype=args.dtype, scale=args.scale,
                    levels=levels, torch=torch.__version__, repeat=repeat,
                    triton=_triton_version())
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == '__main__':
    main()
