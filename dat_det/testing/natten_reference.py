"""Neighbourhood attention one query at a time, from natten's definition (test oracle).

For a map of ``H x W`` (both at least the kernel ``k``, dilation 1), query ``(i, j)`` attends to
the ``k x k`` keys whose rows start at ``clamp(i - k // 2, 0, H - k)`` and whose columns start
at ``clamp(j - k // 2, 0, W - k)``: near a border the window slides inwards instead of being
cut. The key at ``(a, b)`` adds ``rpb[head, a - i + k - 1, b - j + k - 1]`` to the logit.

Written as plain loops over heads and queries so that it shares nothing with the production
paths (no unfold, no tiles, no masks); only for small maps.
"""
from typing import Optional

import torch


def window_start(position: int, length: int, kernel_size: int) -> int:
    """First key of the window of the query at ``position`` on an axis of ``length``."""
    return min(max(position - kernel_size // 2, 0), length - kernel_size)


def neighborhood_attention_per_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     kernel_size: int,
                                     rpb: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Neighbourhood attention; ``q`` is already scaled.

    Args:
        q, k, v: (B, heads, H, W, head_dim) with H, W >= kernel_size.
        kernel_size: odd window side.
        rpb: optional (heads, 2k-1, 2k-1) relative-position bias.

    Returns:
        (B, heads, H, W, head_dim); differentiable in every input.
    """
    batch, heads, height, width, _ = q.shape
    if min(height, width) < kernel_size:
        raise ValueError(f'map {height}x{width} is smaller than the kernel {kernel_size}')
    rows = []
    for i in range(height):
        top = window_start(i, height, kernel_size)
        cols = []
        for j in range(width):
            left = window_start(j, width, kernel_size)
            keys = k[:, :, top:top + kernel_size, left:left + kernel_size].flatten(2, 3)
            values = v[:, :, top:top + kernel_size, left:left + kernel_size].flatten(2, 3)
            logits = torch.einsum('bnd,bnkd->bnk', q[:, :, i, j], keys)  # (B, heads, k*k)
            if rpb is not None:
                r0, c0 = top - i + kernel_size - 1, left - j + kernel_size - 1
                logits = logits + rpb[:, r0:r0 + kernel_size, c0:c0 + kernel_size].flatten(1)
            cols.append(torch.einsum('bnk,bnkd->bnd', logits.softmax(-1), values))
        rows.append(torch.stack(cols, dim=2))
    return torch.stack(rows, dim=2)


def neighborhood_attention_block_per_query(x: torch.Tensor, qkv_weight: torch.Tensor,
                                           qkv_bias: Optional[torch.Tensor],
                                           proj_weight: torch.Tensor,
                                           proj_bias: Optional[torch.Tensor], num_heads: int,
                                           kernel_size: int,
                                           rpb: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The N block of the DAT++ releases (natten's module) on ``x`` (B, C, H, W).

    Maps smaller than the kernel are zero-padded at the bottom/right before the qkv
    projection and cropped after the attention; q is scaled by ``head_dim ** -0.5``.

    Args:
        qkv_weight, qkv_bias: (3C, C), (3C,) of the qkv projection (output order q, k, v,
            each ``heads x head_dim``).
        proj_weight, proj_bias: (C, C), (C,) of the output projection.
        rpb: optional (heads, 2k-1, 2k-1).

    Returns:
        (B, C, H, W).
    """
    batch, channels, height, width = x.shape
    head_dim = channels // num_heads
    padded_h, padded_w = max(height, kernel_size), max(width, kernel_size)
    canvas = x.new_zeros(batch, channels, padded_h, padded_w)
    canvas[:, :, :height, :width] = x
    qkv = torch.einsum('bchw,oc->bhwo', canvas, qkv_weight)
    if qkv_bias is not None:
        qkv = qkv + qkv_bias
    # (B, H, W, 3, heads, hd) -> three (B, heads, H, W, hd)
    qkv = qkv.reshape(batch, padded_h, padded_w, 3, num_heads, head_dim)
    q, k, v = (qkv[:, :, :, i].permute(0, 3, 1, 2, 4) for i in range(3))
    out = neighborhood_attention_per_query(q * head_dim ** -0.5, k, v, kernel_size, rpb)
    out = out.permute(0, 2, 3, 1, 4).reshape(batch, padded_h, padded_w, channels)
    out = out[:, :height, :width]
    out = torch.einsum('bhwc,oc->bohw', out, proj_weight)
    return out if proj_bias is None else out + proj_bias[:, None, None]
