"""Exact reference of multi-scale deformable attention, written out tap by tap.

Every sample reads the four pixels around it on its level; pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)`` in map units (``align_corners=False``), so a normalized location
``(x, y)`` sits at ``(x * W - 0.5, y * H - 0.5)`` pixels. A pixel outside the map reads zero
(zero padding). The output of a query and head is the attention-weighted sum, over levels and
points, of the bilinear interpolations.

The code loops over levels (a handful) and is vectorised over batch, heads, queries and
points: for each level the four corner indices and weights are computed explicitly, the
corner rows are gathered from the level's ``(B * heads, H * W, C)`` table (advanced
indexing), and the backward accumulates the output gradient back into them
(``index_put_``). No fused kernel and no ``grid_sample``: it is the ground truth the other
backends are tested against (and is itself tested against mmcv), it runs on any device and
dtype, and it traces to plain ONNX ops (``Floor``, ``Where``, ``Gather``, ``MatMul``) with
level sizes that may be traced tensors and free batch and query counts, which is how the op
is exported. It materialises the ``(B * heads, Lq * points, 4, C)`` corner rows, so it is a
few times slower than a ``grid_sample`` formulation; the fast paths are the other backends.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

#: a level size: a Python int, or a 0-dim integer tensor while tracing for export
Size = Union[int, Tensor]


class LevelTaps(NamedTuple):
    """The four corners of every sample of one level.

    Shapes use ``N = B * heads`` and ``K = Lq * points``; the last axis holds the corners in
    the order ``(x0, y0), (x1, y0), (x0, y1), (x1, y1)``.

    Attributes:
        index: ``(N, K, 4)`` int64 row in the level's ``H * W`` pixels; clamped into the map
            for corners outside it (their weight is 0).
        weight: ``(N, K, 4)`` bilinear weight of each corner, 0 outside the map.
        slope_x, slope_y: ``(N, K, 4)`` derivative of ``weight`` with respect to the pixel
            coordinate ``x`` (resp. ``y``) of the sample; only made when asked.
    """

    index: Tensor
    weight: Tensor
    slope_x: Optional[Tensor] = None
    slope_y: Optional[Tensor] = None


def _axis_corners(coord: Tensor, size: Size) -> Tuple[Tensor, Tensor, Tensor]:
    """Lower / upper neighbour along one axis of pixel coordinates ``coord`` ``(N, K)``.

    Returns ``(N, K, 2)`` each: the corner pixels clamped into ``[0, size - 1]`` (int64), their
    linear weights ``(1 - f, f)`` zeroed outside the map, and the derivatives of those weights
    with respect to ``coord`` (``(-1, 1)``, zeroed alike).
    """
    lower = coord.floor()
    frac = coord - lower
    corners = torch.stack((lower, lower + 1), -1)
    last = size - 1
    inside = (corners >= 0) & (corners <= last)
    zero = torch.zeros((), dtype=coord.dtype, device=coord.device)
    weight = torch.where(inside, torch.stack((1 - frac, frac), -1), zero)
    slope = torch.where(inside, coord.new_tensor([-1.0, 1.0]), zero)
    # clamp in floating point first: a far-away sample must not overflow the int cast
    clamped = torch.maximum(torch.minimum(corners, last + zero), zero).long()
    return clamped, weight, slope


def level_taps(locations: Tensor, height: Size, width: Size, slopes: bool = False) -> LevelTaps:
    """Corners of normalized ``(x, y)`` ``locations`` ``(N, K, 2)`` on an ``height x width``
    map (see :class:`LevelTaps`)."""
    col, weight_x, slope_x = _axis_corners(locations[..., 0] * width - 0.5, width)
    row, weight_y, slope_y = _axis_corners(locations[..., 1] * height - 0.5, height)

    def outer(along_y: Tensor, along_x: Tensor) -> Tensor:
        # (N, K, 2) x (N, K, 2) -> (N, K, 4), y-major: x varies fastest, as the corner order
        return (along_y.unsqueeze(-1) * along_x.unsqueeze(-2)).flatten(-2)

    index = (row * width).unsqueeze(-1) + col.unsqueeze(-2)
    taps = LevelTaps(index=index.flatten(-2), weight=outer(weight_y, weight_x))
    if slopes:
        taps = taps._replace(slope_x=outer(weight_y, slope_x), slope_y=outer(slope_y, weight_x))
    return taps


def _level_tables(value: Tensor, shapes: Sequence[Tuple[Size, Size]]) -> List[Tensor]:
    """``value`` ``(B, S, heads, C)`` -> per level ``(B * heads, H * W, C)``."""
    # flatten / unflatten rather than sizes computed here: a traced graph keeps B and Lq free
    return [level_value.transpose(1, 2).flatten(0, 1)
            for level_value in value.split([h * w for h, w in shapes], dim=1)]


def _per_level(tensor: Tensor, level: int) -> Tensor:
    """``(B, Lq, heads, levels, points, ...)`` -> ``(B * heads, Lq * points, ...)`` of one
    level."""
    return tensor.select(3, level).transpose(1, 2).flatten(0, 1).flatten(1, 2)


def _gather_corners(table: Tensor, index: Tensor) -> Tensor:
    """Rows of ``table`` ``(N, H * W, C)`` at ``index`` ``(N, K, 4)`` -> ``(N, K, 4, C)``."""
    which = torch.arange(table.shape[0], device=index.device).view(-1, 1, 1)
    return table[which, index]


def msda_pytorch(value: Tensor, shapes: Sequence[Tuple[Size, Size]],
                 sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention, tap by tap.

    Args:
        value: ``(B, S, heads, C)`` with ``S = sum(H_l * W_l)``, levels stacked row-major.
        shapes: ``[(H_l, W_l)]`` for each level, as Python ints (or 0-dim integer tensors
            while tracing).
        sampling_locations: ``(B, Lq, heads, levels, points, 2)``, normalized ``(x, y)``;
            ``(0, 0)`` is the top-left corner of the map and ``(1, 1)`` the bottom-right one.
        attention_weights: ``(B, Lq, heads, levels, points)``.

    Returns:
        ``(B, Lq, heads * C)``: bilinear samples with zero padding and
        ``align_corners=False``, weighted and summed over levels and points.
    """
    heads, points = value.shape[2], sampling_locations.shape[4]
    out = None
    for level, table in enumerate(_level_tables(value, shapes)):
        height, width = shapes[level]
        taps = level_taps(_per_level(sampling_locations, level), height, width)
        corners = _gather_corners(table, taps.index)  # (N, K, 4, C)
        weights = taps.weight * _per_level(attention_weights, level).unsqueeze(-1)
        # one (1, points * 4) x (points * 4, C) product per (b, head, query)
        weighted = torch.matmul(weights.unflatten(1, (-1, points)).flatten(2).unsqueeze(-2),
                                corners.unflatten(1, (-1, points)).flatten(2, 3)).squeeze(-2)
        out = weighted if out is None else out + weighted  # (N, Lq, C)
    return out.unflatten(0, (-1, heads)).transpose(1, 2).flatten(2)


def msda_pytorch_backward(grad_out: Tensor, value: Tensor, shapes: List[Tuple[int, int]],
                          sampling_locations: Tensor, attention_weights: Tensor,
                          value_grad: bool = True, location_grad: bool = True
                          ) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    """Gradients of :func:`msda_pytorch` written out per tap.

    With ``g`` the output gradient of a (b, query, head), ``v_c`` the value row of corner
    ``c`` of a sample, ``w_c`` its bilinear weight and ``a`` the sample's attention weight:
    ``d a = sum_c w_c <g, v_c>``, ``d v_c += a w_c g`` and ``d x = a W sum_c (dw_c/dx)
    <g, v_c>`` (``W`` from normalized to pixel units; alike for ``y`` with ``H``).

    Args:
        grad_out: ``(B, Lq, heads * C)``.
        Others: as :func:`msda_pytorch`.

    Returns:
        ``grad_value`` ``(B, S, heads, C)``, ``grad_locations`` ``(B, Lq, heads, levels,
        points, 2)`` (``None`` where not asked) and ``grad_weights`` ``(B, Lq, heads, levels,
        points)``.
    """
    batch, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    count = batch * heads
    # (B, Lq, heads * C) -> (N, Lq, C, 1), N = B * heads
    grad = grad_out.view(batch, num_queries, heads, channels).transpose(1, 2).reshape(
        count, num_queries, channels, 1)
    grad_tables, grad_xy, grad_attention = [], [], []
    for level, table in enumerate(_level_tables(value, shapes)):
        height, width = shapes[level]
        taps = level_taps(_per_level(sampling_locations, level), height, width,
                          slopes=location_grad)
        attention = _per_level(attention_weights, level)  # (N, K)
        corners = _gather_corners(table, taps.index)  # (N, K, 4, C)
        # <g, v_c> for every corner: (N, Lq, points * 4, C) x (N, Lq, C, 1)
        dots = torch.matmul(corners.view(count, num_queries, points * 4, channels), grad)
        dots = dots.view(taps.index.shape)  # (N, K, 4)
        grad_attention.append((dots * taps.weight).sum(-1))
        if location_grad:
            grad_xy.append(torch.stack((width * (dots * taps.slope_x).sum(-1),
                                        height * (dots * taps.slope_y).sum(-1)), -1)
                           * attention.unsqueeze(-1))
        if value_grad:
            # every corner adds a * w_c * g to its row: (N, Lq, points * 4, 1) x (N, Lq, 1, C)
            scale = (taps.weight * attention.unsqueeze(-1)).view(count, num_queries,
                                                                 points * 4, 1)
            contributions = (scale * grad.transpose(-1, -2)).view(corners.shape)
            which = torch.arange(count, device=value.device).view(-1, 1, 1)
            grad_tables.append(torch.zeros_like(table).index_put_((which, taps.index),
                                                                  contributions, accumulate=True))

    def to_inputs_layout(per_level: List[Tensor]) -> Tensor:
        # levels of (N, Lq * points, ...) -> (B, Lq, heads, levels, points, ...)
        stacked = torch.stack(per_level, 2)  # (N, Lq * points, levels, ...)
        tail = stacked.shape[3:]
        stacked = stacked.view((batch, heads, num_queries, points, levels) + tail)
        return stacked.transpose(3, 4).transpose(1, 2)

    grad_value = None
    if value_grad:
        # levels of (N, H * W, C) -> (B, S, heads, C)
        grad_value = torch.cat(grad_tables, 1).view(batch, heads, value.shape[1],
                                                     channels).transpose(1, 2)
    grad_locations = to_inputs_layout(grad_xy) if location_grad else None
    return grad_value, grad_locations, to_inputs_layout(grad_attention)
