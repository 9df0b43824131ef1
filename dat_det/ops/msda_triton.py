"""Fused Triton kernels for multi-scale deformable attention (forward and backward).

Design:

- ``value`` is laid out head-major, ``(B, heads, S, C)``, so the ``C`` channels of one pixel
  of one head are contiguous and the four taps of a bilinear sample hit few cache lines.
- One program handles one ``(batch, head)`` pair and a block of ``BLOCK_Q`` consecutive
  queries, looping over all levels and points; accumulation is in float32 (float64 when the
  op runs in float64, which is what ``gradcheck`` needs).
- The backward recomputes the taps, reduces the location and attention-weight gradients in
  registers (each sample belongs to exactly one program, so they are plain stores) and
  accumulates ``grad_value`` with atomic adds into a float32 buffer. On the coarse levels
  thousands of samples hit the same pixel, so the last ``COARSE_TAIL_POSITIONS`` positions of
  ``S`` (the coarse levels in the usual fine-to-coarse order) accumulate into
  ``COARSE_REPLICAS`` copies, one per query block modulo the count, summed afterwards.
- Block sizes are autotuned on CUDA; in interpreter mode (``TRITON_INTERPRET=1``, CPU tensors)
  a single small configuration is used.

The kernels reach the operator through a ``torch.library.triton_op`` pair,
``dat_det::multi_scale_deformable_attn_triton`` (with its autograd formula) and its backward:
eager calls launch the kernels directly, and ``torch.compile`` decomposes the operators into
them (``torch.library.wrap_triton``), so the compiler sees the kernels.

Whether the kernels run in interpreter mode is decided when this module is imported, because
Triton decides it when a kernel is defined.
"""
import functools
import os
from typing import Tuple

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .msda_precision import compute_dtype

try:
    import triton
    import triton.language as tl
    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    TRITON_AVAILABLE = False

INTERPRET_MODE = os.environ.get('TRITON_INTERPRET', '0') == '1'
_INTERPRET_BLOCK_Q = 16
COARSE_TAIL_POSITIONS = 1280
COARSE_REPLICAS = 4
OP_NAME = 'dat_det::multi_scale_deformable_attn_triton'
BACKWARD_OP_NAME = 'dat_det::multi_scale_deformable_attn_triton_backward'

_TORCH_TO_TL = {}

if TRITON_AVAILABLE:
    _TORCH_TO_TL = {torch.float32: tl.float32, torch.float64: tl.float64}

    @triton.jit
    def _bilinear_setup(loc_ptr, attn_ptr, sample, q_mask, height, width,
                        ACC: tl.constexpr):
        """Corner ``(x0, y0)``, fractions ``(fx, fy)`` and attention weight of samples."""
        loc_x = tl.load(loc_ptr + 2 * sample, mask=q_mask, other=0.0).to(ACC)
        loc_y = tl.load(loc_ptr + 2 * sample + 1, mask=q_mask, other=0.0).to(ACC)
        attn = tl.load(attn_ptr + sample, mask=q_mask, other=0.0).to(ACC)
        # align_corners=False; clamping keeps far-away samples (all taps outside) in int range
        x = tl.minimum(tl.maximum(loc_x * width.to(ACC) - 0.5, -2.0), width.to(ACC) + 1.0)
        y = tl.minimum(tl.maximum(loc_y * height.to(ACC) - 0.5, -2.0), height.to(ACC) + 1.0)
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        return x0f.to(tl.int32), y0f.to(tl.int32), x - x0f, y - y0f, attn

    @triton.jit
    def _corner(x0, y0, fx, fy, q_mask, height, width, start, CORNER: tl.constexpr):
        """Pixel index in ``S``, bilinear weights along x and y, and in-map mask of corner
        ``CORNER`` (0..3 as ``(x0, y0), (x1, y0), (x0, y1), (x1, y1)``) of samples."""
        cx = x0 + (CORNER % 2)
        cy = y0 + (CORNER // 2)
        wx = fx if CORNER % 2 == 1 else 1.0 - fx
        wy = fy if CORNER // 2 == 1 else 1.0 - fy
        inside = q_mask & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
        return start + cy * width + cx, wx, wy, inside

    @triton.jit
    def _msda_fwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                         num_values, num_queries, query_bucket,
                         HEADS: tl.constexpr, C: tl.constexpr, LEVELS: tl.constexpr,
                         POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
                         ACC: tl.constexpr):
        """out ``(B, Lq, heads, C)`` from value ``(B, heads, S, C)``, loc ``(B, Lq, heads,
        levels, points, 2)`` and attn ``(B, Lq, heads, levels, points)``."""
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HEADS
        h = pid_bh % HEADS
        q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        c = tl.arange(0, BLOCK_C)
        q_mask = q < num_queries
        c_mask = c < C
        value_base = value_ptr + pid_bh.to(tl.int64) * num_values * C
        query_row = (b * num_queries + q).to(tl.int64) * HEADS + h
        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=ACC)
        for level in range(LEVELS):  # a loop, not unrolled: keeps the kernel compact
            height = tl.load(shapes_ptr + 2 * level).to(tl.int32)
            width = tl.load(shapes_ptr + 2 * level + 1).to(tl.int32)
            start = tl.load(starts_ptr + level).to(tl.int32)
            for point in tl.static_range(POINTS):
                sample = query_row * (LEVELS * POINTS) + level * POINTS + point
                x0, y0, fx, fy, attn = _bilinear_setup(loc_ptr, attn_ptr, sample, q_mask,
                                                       height, width, ACC)
                for corner in tl.static_range(4):
                    pixel, wx, wy, inside = _corner(x0, y0, fx, fy, q_mask, height, width,
                                                    start, corner)
                    v = tl.load(value_base + pixel[:, None].to(tl.int64) * C + c[None, :],
                                mask=inside[:, None] & c_mask[None, :], other=0.0).to(ACC)
                    acc += (wx * wy * attn)[:, None] * v
        out_ptrs = out_ptr + query_row[:, None] * C + c[None, :]
        tl.store(out_ptrs, acc, mask=q_mask[:, None] & c_mask[None, :])

    @triton.jit
    def _msda_bwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                         grad_value_ptr, tail_ptr, grad_loc_ptr, grad_attn_ptr,
                         num_values, num_queries, query_bucket, tail_start,
                         HEADS: tl.constexpr, C: tl.constexpr, LEVELS: tl.constexpr,
                         POINTS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
                         ACC: tl.constexpr, GRAD_VALUE: tl.constexpr, REPLICAS: tl.constexpr):
        """Gradients of :func:`_msda_fwd_kernel`.

        grad_value ``(B, heads, S, C)`` and tail ``(REPLICAS, B * heads, S - tail_start, C)``
        must be zeroed (float32 or float64); grad_loc and grad_attn are fully overwritten.
        With ``REPLICAS > 1``, taps of positions ``>= tail_start`` (the coarse levels, where
        thousands of samples hit one pixel) go to replica ``query block % REPLICAS`` of the
        tail buffer instead of grad_value, which divides the atomic contention there.
        """
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HEADS
        h = pid_bh % HEADS
        q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        c = tl.arange(0, BLOCK_C)
        q_mask = q < num_queries
        c_mask = c < C
        value_base = value_ptr + pid_bh.to(tl.int64) * num_values * C
        grad_value_base = grad_value_ptr + pid_bh.to(tl.int64) * num_values * C
        # first row of this program's replica and (batch, head) in the tail buffer
        tail_row = ((pid_q % REPLICAS) * tl.num_programs(1) + pid_bh) * (num_values - tail_start)
        query_row = (b * num_queries + q).to(tl.int64) * HEADS + h
        grad_out = tl.load(grad_out_ptr + query_row[:, None] * C + c[None, :],
                           mask=q_mask[:, None] & c_mask[None, :], other=0.0).to(ACC)
        for level in range(LEVELS):  # a loop, not unrolled: keeps the kernel compact
            height = tl.load(shapes_ptr + 2 * level).to(tl.int32)
            width = tl.load(shapes_ptr + 2 * level + 1).to(tl.int32)
            start = tl.load(starts_ptr + level).to(tl.int32)
            for point in tl.static_range(POINTS):
                sample = query_row * (LEVELS * POINTS) + level * POINTS + point
                x0, y0, fx, fy, attn = _bilinear_setup(loc_ptr, attn_ptr, sample, q_mask,
                                                       height, width, ACC)
                grad_attn = tl.zeros((BLOCK_Q,), dtype=ACC)
                grad_fx = tl.zeros((BLOCK_Q,), dtype=ACC)
                grad_fy = tl.zeros((BLOCK_Q,), dtype=ACC)
                for corner in tl.static_range(4):
                    pixel, wx, wy, inside = _corner(x0, y0, fx, fy, q_mask, height, width,
                                                    start, corner)
                    sign_x = 1.0 if corner % 2 == 1 else -1.0
                    sign_y = 1.0 if corner // 2 == 1 else -1.0
                    tap_mask = inside[:, None] & c_mask[None, :]
                    offsets = pixel[:, None].to(tl.int64) * C + c[None, :]
                    v = tl.load(value_base + offsets, mask=tap_mask, other=0.0).to(ACC)
                    # d out / d (tap weight): one dot product per query, reduced in registers
                    dot = tl.sum(grad_out * v, axis=1)
                    grad_attn += wx * wy * dot
                    grad_fx += sign_x * wy * dot
                    grad_fy += sign_y * wx * dot
                    if GRAD_VALUE:
                        targets = grad_value_base + offsets
                        if REPLICAS > 1:
                            tail_offsets = (tail_row + pixel - tail_start)[:, None].to(
                                tl.int64) * C + c[None, :]
                            targets = tl.where((pixel >= tail_start)[:, None],
                                               tail_ptr + tail_offsets, targets)
                        # relaxed: only the sum matters, no ordering with other memory ops
                        tl.atomic_add(targets, (wx * wy * attn)[:, None] * grad_out,
                                      mask=tap_mask, sem='relaxed')
                tl.store(grad_attn_ptr + sample, grad_attn, mask=q_mask)
                tl.store(grad_loc_ptr + 2 * sample, grad_fx * attn * width.to(ACC),
                         mask=q_mask)
                tl.store(grad_loc_ptr + 2 * sample + 1, grad_fy * attn * height.to(ACC),
                         mask=q_mask)

    def _autotune_configs():
        return [
            triton.Config({'BLOCK_Q': block_q}, num_warps=warps)
            for block_q, warps in ((16, 2), (32, 4), (64, 4), (64, 8), (128, 8))
        ]

    # query_bucket (Lq rounded up to a power of two) is only an autotuning key, so that a new
    # image size does not trigger a new tuning run
    _AUTOTUNE_KEY = ['query_bucket', 'HEADS', 'C', 'LEVELS', 'POINTS', 'ACC']
    if INTERPRET_MODE:
        _fwd_kernel = _msda_fwd_kernel
        _bwd_kernel = _msda_bwd_kernel
    else:
        _fwd_kernel = triton.autotune(_autotune_configs(), key=_AUTOTUNE_KEY)(_msda_fwd_kernel)
        _bwd_kernel = triton.autotune(_autotune_configs(),
                                      key=_AUTOTUNE_KEY + ['GRAD_VALUE', 'REPLICAS'],
                                      reset_to_zero=['grad_value_ptr', 'tail_ptr'])(
                                          _msda_bwd_kernel)


def triton_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   compute_dtype: torch.dtype) -> Tensor:
    """Output ``(B, Lq, heads * C)`` of the fused forward kernel, in the dtype of ``value``
    (float64 if ``compute_dtype`` is). Inputs as :func:`msda_triton`.

    Only torch ops and kernels launched through ``torch.library.wrap_triton``: the
    ``triton_op`` lets ``torch.compile`` trace this function, so the compiler sees the kernels.
    """
    batch, num_values, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    value_hm = value.permute(0, 2, 1, 3).contiguous()  # (B, heads, S, C)
    out_dtype = torch.float64 if compute_dtype == torch.float64 else value.dtype
    out = value.new_empty((batch, num_queries, heads, channels), dtype=out_dtype)
    kwargs = _kernel_kwargs(heads, channels, levels, points, compute_dtype)
    if out.numel() > 0:
        wrap_triton(_fwd_kernel)[_grid(batch, heads, num_queries)](
            value_hm, spatial_shapes.contiguous(), level_start_index.contiguous(),
            sampling_locations.contiguous(), attention_weights.contiguous(), out, num_values,
            num_queries, triton.next_power_of_2(num_queries), **kwargs)
    return out.view(batch, num_queries, heads * channels)


def triton_backward(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                    level_start_index: Tensor, sampling_locations: Tensor,
                    attention_weights: Tensor, compute_dtype: torch.dtype,
                    value_grad: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`triton_forward`: ``grad_value`` ``(B, S, heads, C)`` in the dtype of
    ``value`` (zeros, not computed, when ``value_grad`` is False), ``grad_locations`` and
    ``grad_weights`` in the dtypes of their inputs."""
    batch, num_values, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    value_hm = value.permute(0, 2, 1, 3).contiguous()
    accum_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    tail = min(num_values, COARSE_TAIL_POSITIONS) if value_grad else 0
    replicas = COARSE_REPLICAS if tail > 0 else 1
    zeros = functools.partial(torch.zeros, dtype=accum_dtype, device=value.device)
    grad_value_hm = zeros((batch, heads, num_values, channels) if value_grad else (1,))
    tail_grads = zeros((replicas, batch * heads, tail, channels) if replicas > 1 else (1,))
    locations = sampling_locations.contiguous()
    weights = attention_weights.contiguous()
    grad_locations = torch.empty_like(locations)
    grad_weights = torch.empty_like(weights)
    kwargs = _kernel_kwargs(heads, channels, levels, points, compute_dtype)
    if grad_out.numel() > 0:
        wrap_triton(_bwd_kernel)[_grid(batch, heads, num_queries)](
            value_hm, spatial_shapes.contiguous(), level_start_index.contiguous(), locations,
            weights, grad_out.contiguous(), grad_value_hm, tail_grads, grad_locations,
            grad_weights, num_values, num_queries, triton.next_power_of_2(num_queries),
            num_values - tail, GRAD_VALUE=value_grad, REPLICAS=replicas, **kwargs)
    if not value_grad:
        return value.new_zeros(value.shape), grad_locations, grad_weights
    if replicas > 1:
        grad_value_hm[:, :, num_values - tail:] += tail_grads.sum(0).view(
            batch, heads, tail, channels)
    return grad_value_hm.permute(0, 2, 1, 3).to(value.dtype), grad_locations, grad_weights


def _kernel_kwargs(heads: int, channels: int, levels: int, points: int,
                   compute_dtype: torch.dtype) -> dict:
    kwargs = dict(HEADS=heads, C=channels, LEVELS=levels, POINTS=points,
                  BLOCK_C=triton.next_power_of_2(channels), ACC=_TORCH_TO_TL[compute_dtype])
    if INTERPRET_MODE:
        kwargs['BLOCK_Q'] = _INTERPRET_BLOCK_Q
    return kwargs


def _grid(batch: int, heads: int, num_queries: int):
    # query blocks on the first axis (no 65535 limit, and programs launched together share
    # one (batch, head) plane of value in cache)
    return lambda meta: (triton.cdiv(num_queries, meta['BLOCK_Q']), batch * heads)


def msda_triton(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor,
                compute_dtype: torch.dtype = torch.float32) -> Tensor:
    """Multi-scale deformable attention with the fused Triton kernels (forward only; the
    registered operator ``dat_det::multi_scale_deformable_attn`` adds the gradients).

    Args:
        value: ``(B, S, heads, C)``, any float dtype.
        spatial_shapes: ``(levels, 2)`` integer ``(H, W)``.
        level_start_index: ``(levels,)`` integer.
        sampling_locations: ``(B, Lq, heads, levels, points, 2)``, any float dtype.
        attention_weights: ``(B, Lq, heads, levels, points)``, any float dtype.
        compute_dtype: accumulation dtype, ``torch.float32`` or ``torch.float64``.

    Returns:
        ``(B, Lq, heads * C)`` in the dtype of ``value`` (float64 if ``compute_dtype`` is).
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError('triton is not installed')
    return triton_forward(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights, compute_dtype)


if TRITON_AVAILABLE:

    @triton_op(OP_NAME, mutates_args=())
    def _triton_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        """:func:`triton_forward` in the operators' precision."""
        return triton_forward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights,
                              compute_dtype(value, sampling_locations, attention_weights))

    @triton_op(BACKWARD_OP_NAME, mutates_args=())
    def _triton_backward_op(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                            level_start_index: Tensor, sampling_locations: Tensor,
                            attention_weights: Tensor,
                            value_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """:func:`triton_backward` in the operators' precision."""
        return triton_backward(grad_out, value, spatial_shapes, level_start_index,
                               sampling_locations, attention_weights,
                               compute_dtype(value, sampling_locations, attention_weights),
                               value_grad)

    def _setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_out: Tensor):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        value_grad, _, _, location_grad, weight_grad = ctx.needs_input_grad
        grad_value, grad_locations, grad_weights = \
            torch.ops.dat_det.multi_scale_deformable_attn_triton_backward(
                grad_out, value, spatial_shapes, level_start_index, locations, weights,
                value_grad)
        return (grad_value if value_grad else None, None, None,
                grad_locations if location_grad else None,
                grad_weights if weight_grad else None)

    _triton_op.register_autograd(_backward, setup_context=_setup_context)
