"""Time the attention of one DAT deformable-attention (D) block at detection scale against the
pieces an exact faster version would be built from.

    python tools/analysis_tools/benchmark_dat_attention.py [--arch dat-t] [--stage 3]
        [--size 800x1333] [--threads 1] [--iters 3] [--warmup 1] [--flex]

The first D block of ``--stage`` (1-4) of the preset is built with random weights moved off
their init (position table, offset network), and queries, keys, values and deformed positions
are taken from a random feature map of the size that stage sees for a ``--size`` image. Timed
in one run, alternating (this process's CPU time, so other load on the machine does not count):

- ``dat_det``: ``DeformableAttention._attend`` as the backbone runs it without autograd (the
  position bias built for a chunk of queries, then ``F.scaled_dot_product_attention`` with it
  as an additive mask);
- ``bias only``: building the position bias of every query in the same chunks;
- ``SDPA without bias``: the fused attention alone: what the block would cost if the bias
  were free, the floor of an exact kernel built on PyTorch's attention;
- with ``--flex``: ``torch.compile``-d FlexAttention with the bias computed inside the kernel
  (``score_mod``: the bilinear lookup in the position table), checked against ``dat_det``.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from dat_det.models.layers.dat import DeformableAttention
from dat_det.models.layers.dat.deformable_attention import query_grid
from dat_det.models.layers.dat.presets import resolve_arch
from dat_det.models.layers.dat.trunk import build_trunk
from dat_det.utils.timing import time_interleaved


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='dat-t')
    parser.add_argument('--stage', type=int, default=3, choices=(1, 2, 3, 4))
    parser.add_argument('--size', default='800x1333', help='image HxW')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--flex', action='store_true',
                        help='also time FlexAttention with the bias in score_mod (compiles)')
    return parser.parse_args()


def stage_size(size: str, stage: int) -> tuple[int, int]:
    """Feature map of stage ``stage`` (1-4) for an image ``HxW``: a stride-4 stem, then
    halvings (odd sizes padded up, as the backbone does)."""
    h, w = (int(v) for v in size.lower().split('x'))
    h, w = math.ceil(h / 4), math.ceil(w / 4)
    for _ in range(stage - 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def first_deformable_attention(arch: str, stage: int) -> DeformableAttention:
    trunk = build_trunk(resolve_arch(arch))
    for attn in trunk.stages[stage - 1].attns:
        if isinstance(attn, DeformableAttention):
            return attn.eval()
    raise SystemExit(f'stage {stage} of {arch} has no deformable-attention block')


def flex_bias_attention(attn: DeformableAttention, pos: torch.Tensor, h: int, w: int
                        ) -> Callable:
    """FlexAttention (compiled) whose ``score_mod`` adds the bilinear lookup of the position
    table that :meth:`DeformableAttention.position_bias` makes with ``grid_sample``
    (align_corners, zero padding): (q, k, v) -> (B, heads, HW, hc). Batch 1."""
    from torch.nn.attention.flex_attention import flex_attention
    table = attn.rpe_table.detach()
    t_h, t_w = table.shape[-2:]
    flat = table.reshape(attn.num_heads, t_h * t_w)
    grid = query_grid(h, w, pos.dtype, pos.device, attn.formulation)  # (h, w, 2) as (y, x)
    # table index of displacement (q - p) / 2 on the [-1, 1] grid: (q - p + 2) (T - 1) / 4
    sy, sx = (t_h - 1) / 4.0, (t_w - 1) / 4.0
    q_y, q_x = (grid[:, 0, 0] + 2) * sy, (grid[0, :, 1] + 2) * sx
    k_y = pos[..., 0].reshape(attn.n_groups, -1) * sy
    k_x = pos[..., 1].reshape(attn.n_groups, -1) * sx
    heads_per_group = attn.heads_per_group

    def score_mod(score, b, head, q_idx, kv_idx):
        group = head // heads_per_group
        y = q_y[q_idx // w] - k_y[group, kv_idx]
        x = q_x[q_idx % w] - k_x[group, kv_idx]
        y0, x0 = torch.floor(y), torch.floor(x)
        fy, fx = y - y0, x - x0
        y0, x0 = y0.to(torch.int64), x0.to(torch.int64)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                yi, xi = y0 + dy, x0 + dx
                inside = (yi >= 0) & (yi < t_h) & (xi >= 0) & (xi < t_w)
                value = flat[head, torch.where(inside, yi * t_w + xi, 0)]
                score = score + torch.where(inside, value * (wy * wx), 0.0)
        return score

    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, score_mod=score_mod, scale=attn.scale)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attn = first_deformable_attention(args.arch, args.stage)
    if attn.rpe_table is None or not isinstance(attn.rpe_table, torch.nn.Parameter) \
            or attn.fixed_pe:
        raise SystemExit('this block has no position table bias to time')
    with torch.no_grad():  # off the init: a bias of the size trained ones reach
        attn.rpe_table.normal_(0.0, 0.3)
        for p in attn.conv_offset.parameters():
            p.normal_(0.0, 0.1)
    h, w = stage_size(args.size, args.stage)
    x = torch.randn(1, attn.dim, h, w)
    heads, hc = attn.num_heads, attn.head_dim
    with torch.no_grad():  # the inputs of _attend, as DeformableAttention.forward makes them
        q = attn.proj_q(x)
        pos, _ = attn.sampling_positions(q)
        n_sample = pos.shape[1] * pos.shape[2]
        sampled = attn._sample_keys(x, pos).reshape(1, attn.dim, 1, n_sample)
        q, k, v = (attn.split_heads(t) for t in (q, attn.proj_k(sampled),
                                                 attn.proj_v(sampled)))
    chunk = attn.bias_chunk_queries(1, n_sample)

    def bias_only() -> None:
        for start in range(0, h * w, chunk):
            attn.position_bias(pos, h, w, start, min(start + chunk, h * w))

    calls: Dict[str, Callable[[], object]] = {
        'dat_det': lambda: attn._attend(q, k, v, pos, h, w),
        'bias only': bias_only,
        'SDPA without bias': lambda: F.scaled_dot_product_attention(q, k, v, scale=attn.scale),
    }
    print(f'{args.arch} stage {args.stage}, first D block at {args.size}: {h}x{w} = {h * w} '
          f'queries, {n_sample} keys, {heads} heads of {hc} channels, '
          f'{args.threads} thread(s)')
    with torch.no_grad():
        reference = calls['dat_det']()
        if args.flex:
            flex = flex_bias_attention(attn, pos, h, w)
            diff = (flex(q, k, v) - reference).abs().max().item()  # compiles
            print(f'FlexAttention with the bias in score_mod: max |flex - dat_det| {diff:.1e}')
            calls['FlexAttention, bias in score_mod'] = lambda: flex(q, k, v)
        results = time_interleaved(calls, iters=args.iters, warmup=args.warmup, clock='cpu')
    base = results['dat_det'].median
    for name, result in results.items():
        print(f'{name:>34}: {result.median * 1e3:8.1f} ms (median CPU time), '
              f'{result.median / base:.2f}x dat_det')


if __name__ == '__main__':
    main()
