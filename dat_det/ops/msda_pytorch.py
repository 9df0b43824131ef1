"""Exact PyTorch reference of multi-scale deformable attention.

This is the formulation of Deformable DETR (and of mmcv's
``multi_scale_deformable_attn_pytorch``): one ``F.grid_sample`` per level followed by a
weighted sum over levels and points. It is slow and memory hungry, but it is the ground
truth the other backends are tested against, and it runs on every device and dtype that
``grid_sample`` supports.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def msda_pytorch(value: Tensor, shapes: List[Tuple[int, int]], sampling_locations: Tensor,
                 attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention by ``grid_sample``.

    Args:
        value: ``(B, S, heads, C)`` with ``S = sum(H_l * W_l)``, levels stacked row-major.
        shapes: ``[(H_l, W_l)]`` for each level, as Python ints.
        sampling_locations: ``(B, Lq, heads, levels, points, 2)``, normalized ``(x, y)``;
            ``(0, 0)`` is the top-left corner of the map and ``(1, 1)`` the bottom-right one.
        attention_weights: ``(B, Lq, heads, levels, points)``.

    Returns:
        ``(B, Lq, heads * C)``. Samples use bilinear interpolation with zero padding and
        ``align_corners=False``.
    """
    batch, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (height, width) in enumerate(shapes):
        # (B, H*W, heads, C) -> (B*heads, C, H, W)
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(
            batch * heads, channels, height, width)
        # (B, Lq, heads, points, 2) -> (B*heads, Lq, points, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                          align_corners=False))
    # (B, Lq, heads, levels, points) -> (B*heads, 1, Lq, levels*points)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries,
                                                        levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(batch, heads * channels, num_queries).transpose(1, 2).contiguous()


def msda_pytorch_backward(grad_out: Tensor, value: Tensor, shapes: List[Tuple[int, int]],
                          sampling_locations: Tensor, attention_weights: Tensor,
                          value_grad: bool = True, location_grad: bool = True
                          ) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    """Gradients of :func:`msda_pytorch` by ATen's own ``grid_sample`` backward (exactly what
    autograd computes for the reference, without autograd).

    Args:
        grad_out: ``(B, Lq, heads * C)``.
        Others: as :func:`msda_pytorch`.

    Returns:
        ``grad_value`` ``(B, S, heads, C)``, ``grad_locations`` ``(B, Lq, heads, levels,
        points, 2)`` (``None`` where not asked) and ``grad_weights``.
    """
    batch, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    # (B, Lq, heads * C) -> (B * heads, C, Lq, 1)
    grad = grad_out.transpose(1, 2).reshape(batch * heads, channels, num_queries, 1)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries,
                                                        levels, points)
    grad_values, grad_grids, grad_weights = [], [], []
    for level, (height, width) in enumerate(shapes):
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(
            batch * heads, channels, height, width)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # (B * heads, C, Lq, points)
        grad_weights.append((grad * sampled).sum(1))  # (B * heads, Lq, points)
        grad_value_l, grad_grid_l = torch.ops.aten.grid_sampler_2d_backward(
            grad * weights[:, :, :, level], value_l, grid_l, 0, 0, False,
            [value_grad, location_grad])
        if value_grad:
            # (B * heads, C, H, W) -> (B, H * W, heads, C)
            grad_values.append(grad_value_l.view(batch, heads, channels, height * width)
                               .permute(0, 3, 1, 2))
        if location_grad:
            # (B * heads, Lq, points, 2) -> (B, Lq, heads, points, 2)
            grad_grids.append(grad_grid_l.view(batch, heads, num_queries, points, 2)
                              .transpose(1, 2))
    grad_value = torch.cat(grad_values, 1) if value_grad else None
    grad_locations = 2 * torch.stack(grad_grids, 3) if location_grad else None
    grad_weights = torch.stack(grad_weights, -2).view(batch, heads, num_queries, levels,
                                                      points).transpose(1, 2)
    return grad_value, grad_locations, grad_weights
