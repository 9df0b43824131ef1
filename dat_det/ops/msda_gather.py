"""Gather-based multi-scale deformable attention (the fast CPU path).

Every sample ``(b, q, head, level, point)`` reads four pixels of its level. Folding the
attention weight into the four bilinear corner weights turns the op into one weighted
gather-and-sum over the rows of ``value`` viewed as a ``(B * S * heads, C)`` table, with one bag
of ``levels * points * 4`` taps per ``(b, q, head)``: exactly ``F.embedding_bag(mode='sum')``,
a fused kernel that never materializes the gathered rows.

The backward is hand written (:func:`gather_backward`) so that it never materializes them
either:

- tap gradients ``<grad_out[bag], value_row>``: the per-sample-weight gradient of
  ``embedding_bag`` (see :func:`_tap_weight_grads` for why not ``sampled_addmm``);
- ``grad_value``: per level, the samples sorted by the row of their first corner become bags
  of a second ``embedding_bag`` over the rows of ``grad_out``, one per corner (a sorted segment
  sum instead of a scatter with atomics; see :func:`_scatter_to_rows`);
- location and attention gradients: a few element-wise ops on ``(samples, 4)`` tensors.

Compared with the ``grid_sample`` reference this saves the transposes of ``value``, one kernel
per level and the ``(B * heads, C, Lq, levels * points)`` intermediate. The code is plain
torch and device agnostic: the ``gather`` backend of the operator, its choice for CPU
tensors.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class BilinearTaps:
    """The four bilinear taps of every sample.

    Shapes use ``n = B * Lq * heads`` (one bag per ``(b, q, head)``) and
    ``k = levels * points``; per-level constants are expanded to ``(k,)`` vectors so that
    every element-wise op runs on contiguous rows instead of broadcasting tiny inner dims.

    Attributes:
        rows: ``(n, k, 4)`` int32 rows of the ``(B * S * heads, C)`` value table (int64 for
            tables of 2**30 rows or more), corners ordered ``(x0, y0), (x1, y0), (x0, y1),
            (x1, y1)``; clamped into range where the corner is outside the map.
        first_rows: ``(n, k)`` unclamped rows of corner ``(x0, y0)``; corner ``j`` of a sample
            of level ``l`` is at ``first_rows + corner_row_offsets(...)[l, j]`` when inside.
        weights: ``(n, k, 4)`` attention weight times bilinear weight, 0 outside the map.
        weight_lower, weight_upper: ``(n, k, 2)`` masked bilinear weights of ``(x0, y0)`` and
            ``(x1, y1)``.
        inside_lower, inside_upper: ``(n, k, 2)`` float masks of those coordinates.
        attention: ``(n, k)`` attention weights.
    """

    rows: Tensor
    first_rows: Tensor
    weights: Tensor
    weight_lower: Tensor
    weight_upper: Tensor
    inside_lower: Tensor
    inside_upper: Tensor
    attention: Tensor

    @property
    def weight_x(self) -> Tuple[Tensor, Tensor]:
        return self.weight_lower[..., 0], self.weight_upper[..., 0]

    @property
    def weight_y(self) -> Tuple[Tensor, Tensor]:
        return self.weight_lower[..., 1], self.weight_upper[..., 1]

    @property
    def inside_x(self) -> Tuple[Tensor, Tensor]:
        return self.inside_lower[..., 0], self.inside_upper[..., 0]

    @property
    def inside_y(self) -> Tuple[Tensor, Tensor]:
        return self.inside_lower[..., 1], self.inside_upper[..., 1]

    def tensors(self) -> Tuple[Tensor, ...]:
        """What the backward needs besides the inputs (see :meth:`from_tensors`)."""
        return (self.rows, self.first_rows, self.weights, self.weight_lower,
                self.weight_upper, self.inside_lower, self.inside_upper)

    @classmethod
    def from_tensors(cls, tensors: Tuple[Tensor, ...], attention_weights: Tensor
                     ) -> 'BilinearTaps':
        """The taps from :meth:`tensors` and the attention weights they were made with."""
        rows = tensors[0]
        return cls(*tensors, attention=attention_weights.reshape(rows.shape[:2]))


def bilinear_taps(spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor,
                  num_values: int) -> BilinearTaps:
    """The taps of ``sampling_locations`` ``(B, Lq, heads, levels, points, 2)`` weighted by
    ``attention_weights`` ``(B, Lq, heads, levels, points)`` over ``num_values`` positions."""
    batch, num_queries, heads, levels, points, _ = sampling_locations.shape
    device, dtype = sampling_locations.device, sampling_locations.dtype
    bags = batch * num_queries * heads
    locations = sampling_locations.reshape(bags, levels * points, 2)
    attention = attention_weights.reshape(bags, levels * points)
    size = spatial_shapes.flip(-1).repeat_interleave(points, dim=0)  # (k, 2) as (W, H)
    size_f = size.to(dtype)
    # x and y together, (n, k, 2); align_corners=False: pixel i covers [i, i + 1)
    xy = locations * size_f - 0.5
    # clamping keeps far-away samples (all four taps outside) in the integer range
    lower = torch.minimum(xy.clamp_min(-2), size_f + 1).floor_()
    frac = xy - lower
    inside_lower = ((lower >= 0) & (lower < size_f)).to(dtype)
    inside_upper = ((lower >= -1) & (lower < size_f - 1)).to(dtype)
    weight_lower = (1 - frac) * inside_lower
    weight_upper = frac * inside_upper
    weight_x = (weight_lower[..., 0], weight_upper[..., 0])
    weight_y = (weight_lower[..., 1], weight_upper[..., 1])
    # (the pairs are views of the (n, k, 2) tensors, which are what the taps keep)

    num_rows = batch * num_values * heads
    index_dtype = torch.int32 if num_rows < 2**30 else torch.int64  # headroom for corners
    width = size[:, 0].to(index_dtype)
    start = level_start_index.repeat_interleave(points).to(index_dtype)
    corner = lower.to(index_dtype)
    # first row of each bag's (b, head) in the table, then the pixel of corner (x0, y0)
    bag = torch.arange(bags, device=device)
    bag_base = (bag // (num_queries * heads) * num_values * heads + bag % heads)
    pixel = start + corner[..., 1] * width + corner[..., 0]  # (n, k)
    row00 = pixel * heads + bag_base.to(index_dtype).view(bags, 1)
    row_stride = width * heads  # table rows from y to y + 1
    # the four corners are written straight into their slots (no stack copy)
    rows = row00.new_empty(row00.shape + (4,))
    rows[..., 0] = row00
    torch.add(row00, heads, out=rows[..., 1])
    torch.add(row00, row_stride, out=rows[..., 2])
    torch.add(rows[..., 2], heads, out=rows[..., 3])
    weights = attention.new_empty(attention.shape + (4,))
    attn_y0 = weight_y[0] * attention
    attn_y1 = weight_y[1] * attention
    torch.mul(attn_y0, weight_x[0], out=weights[..., 0])
    torch.mul(attn_y0, weight_x[1], out=weights[..., 1])
    torch.mul(attn_y1, weight_x[0], out=weights[..., 2])
    torch.mul(attn_y1, weight_x[1], out=weights[..., 3])
    return BilinearTaps(rows=rows.clamp_(0, num_rows - 1), first_rows=row00, weights=weights,
                        weight_lower=weight_lower, weight_upper=weight_upper,
                        inside_lower=inside_lower, inside_upper=inside_upper,
                        attention=attention)


def gather_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   return_taps: bool = False) -> 'Tensor | Tuple[Tensor, BilinearTaps]':
    """Multi-scale deformable attention as one weighted gather (``embedding_bag``).

    Args:
        value: ``(B, S, heads, C)``.
        spatial_shapes: ``(levels, 2)`` int64 ``(H, W)``, on the device of ``value``.
        level_start_index: ``(levels,)`` int64 offsets of each level in ``S``.
        sampling_locations: ``(B, Lq, heads, levels, points, 2)`` normalized ``(x, y)``.
        attention_weights: ``(B, Lq, heads, levels, points)``.

    All floating inputs must share one dtype (the operator casts them).

    Returns:
        ``(B, Lq, heads * C)``; with ``return_taps`` also the :class:`BilinearTaps`, which
        :func:`gather_backward` can reuse instead of recomputing them.
    """
    batch, num_values, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    taps = bilinear_taps(spatial_shapes, level_start_index, sampling_locations,
                         attention_weights, num_values)
    taps_per_bag = levels * points * 4
    table = value.contiguous().view(-1, channels)
    out = F.embedding_bag(taps.rows.view(-1, taps_per_bag), table,
                          per_sample_weights=taps.weights.view(-1, taps_per_bag), mode='sum')
    out = out.view(batch, num_queries, heads * channels)
    return (out, taps) if return_taps else out


def gather_backward(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                    level_start_index: Tensor, sampling_locations: Tensor,
                    attention_weights: Tensor, value_grad: bool = True,
                    location_grad: bool = True, weight_grad: bool = True,
                    taps: Optional[BilinearTaps] = None
                    ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of :func:`gather_forward` for ``grad_out`` ``(B, Lq, heads * C)``.

    ``taps`` are those the forward made (``return_taps``); without them they are
    recomputed from the inputs (a few dozen element-wise ops on ``(n, k, 4)`` tensors).

    Returns:
        ``grad_value``, ``grad_locations``, ``grad_weights`` (``None`` where not asked).
    """
    batch, num_values, heads, channels = value.shape
    locations_shape = sampling_locations.shape
    levels, points = locations_shape[3], locations_shape[4]
    if taps is None:
        taps = bilinear_taps(spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, num_values)
    taps_per_bag = levels * points * 4
    grad_bags = grad_out.contiguous().view(-1, channels)
    grad_value = grad_locations = grad_weights = None
    if value_grad:
        row_offsets = corner_row_offsets(spatial_shapes, heads)
        grad_value = _scatter_to_rows(grad_bags, taps.first_rows, taps.weights, row_offsets,
                                      points, batch * num_values * heads).view(value.shape)
    if location_grad or weight_grad:
        table = value.contiguous().view(-1, channels)
        wx0, wx1 = taps.weight_x
        wy0, wy1 = taps.weight_y
        # d out / d (tap weight) per corner, each (n, k)
        g00, g01, g10, g11 = _tap_weight_grads(
            grad_bags, table, taps.rows, taps_per_bag).view(taps.rows.shape).unbind(-1)
        along_x0 = g00 * wx0 + g01 * wx1  # corners of row y0, summed along x
        along_x1 = g10 * wx0 + g11 * wx1
        if weight_grad:
            grad_weights = (along_x0 * wy0 + along_x1 * wy1).view(locations_shape[:-1])
        if location_grad:
            ix0, ix1 = taps.inside_x
            iy0, iy1 = taps.inside_y
            # d weight_x / dx is -1 for x0 and +1 for x1 (inside the map), same for y
            grad_x = (wy0 * (g01 * ix1 - g00 * ix0) + wy1 * (g11 * ix1 - g10 * ix0))
            grad_y = along_x1 * iy1 - along_x0 * iy0
            width = spatial_shapes[:, 1].repeat_interleave(points).to(grad_x.dtype)
            height = spatial_shapes[:, 0].repeat_interleave(points).to(grad_x.dtype)
            grad_locations = torch.stack(
                [grad_x * taps.attention * width, grad_y * taps.attention * height],
                dim=-1).view(locations_shape)
    return grad_value, grad_locations, grad_weights


def _tap_weight_grads(grad_bags: Tensor, table: Tensor, rows: Tensor,
                      taps_per_bag: int) -> Tensor:
    """``(n * 4 * k,)`` dot products ``<grad_out[bag], table[row]>`` of every tap, without
    materializing the gathered rows: the per-sample-weight gradient of ``embedding_bag``.

    Not ``grad_out @ table.T`` sampled at the taps (``torch.sparse.sampled_addmm`` with the
    taps as a CSR matrix), although its CPU kernel is several times faster: the taps of a bag
    repeat rows (points on one pixel, corners clamped outside the map) in no order, and a CSR
    matrix must have sorted, distinct column indices per row. torch checks only part of that
    when it allocates the result, and fails once a bag has more taps than the table has rows
    (a single level of 1x1, 1x2 or 2x1 pixels, say); sorting and merging them costs more than
    the kernel saves.
    """
    indices = rows.reshape(-1)
    offsets = torch.arange(0, indices.numel(), taps_per_bag, device=indices.device,
                           dtype=indices.dtype)
    bag_of_tap = torch.div(torch.arange(indices.numel(), device=indices.device,
                                        dtype=indices.dtype), taps_per_bag,
                           rounding_mode='floor')
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        grad_bags, table, indices, offsets, bag_of_tap, 0)


def corner_row_offsets(spatial_shapes: Tensor, heads: int) -> Tensor:
    """``(levels, 4)`` table-row offsets of the four corners from corner ``(x0, y0)``."""
    row_stride = spatial_shapes[:, 1:2] * heads  # table rows from y to y + 1
    return torch.cat([torch.zeros_like(row_stride), torch.full_like(row_stride, heads),
                      row_stride, row_stride + heads], dim=1)


def _scatter_to_rows(grad_bags: Tensor, first_rows: Tensor, tap_weights: Tensor,
                     row_offsets: Tensor, points: int, num_rows: int) -> Tensor:
    """``(num_rows, C)`` table gradient: ``sum over taps of weight * grad_out[bag]``.

    Per level, the samples sorted by the row of their corner ``(x0, y0)`` form segments of
    equal first row; corner ``j`` of every sample of a segment then lands on one table row,
    ``first row + row_offsets[level, j]``. One ``embedding_bag`` over the rows of
    ``grad_out`` sums each (segment, corner) without atomics, and a single ``index_add_``
    per level adds the four corners' sums into the table. Corners outside the
    map have zero weight, so the rows they alias (or the clamped ones) receive zeros.

    Args:
        grad_bags: ``(n, C)`` output gradient, one row per ``(b, q, head)``.
        first_rows: ``(n, k)`` unclamped table rows of corner ``(x0, y0)``.
        tap_weights: ``(n, k, 4)`` tap weights.
        row_offsets: ``(levels, 4)`` from :func:`corner_row_offsets`.
        points: points per level, ``k = levels * points``.
        num_rows: rows of the table, ``B * S * heads``.
    """
    grad_table = grad_bags.new_zeros(num_rows, grad_bags.shape[1])
    corners = torch.arange(4, device=grad_bags.device).view(4, 1)
    for level in range(row_offsets.shape[0]):
        columns = slice(level * points, (level + 1) * points)
        sorted_rows, order = torch.sort(first_rows[:, columns].reshape(-1))
        touched, counts = torch.unique_consecutive(sorted_rows, return_counts=True)
        num_samples = order.numel()
        if points & (points - 1) == 0:  # a shift is much cheaper than a division
            bags = order >> (points.bit_length() - 1)
        else:
            bags = torch.div(order, points, rounding_mode='trunc')
        # (4, samples): per corner, the weights in sorted order
        weights = tap_weights[:, columns].reshape(-1, 4)[order].t().reshape(-1)
        offsets = (counts.cumsum(0) - counts) + corners * num_samples
        sums = F.embedding_bag(bags.repeat(4), grad_bags, offsets.view(-1),
                               per_sample_weights=weights, mode='sum')
        targets = touched.long() + row_offsets[level].view(4, 1)
        # index_add_ sums duplicate rows; on CPU it is ~10x faster than an accumulating
        # index_put_
        grad_table.index_add_(0, targets.clamp_(0, num_rows - 1).view(-1), sums)
    return grad_table
