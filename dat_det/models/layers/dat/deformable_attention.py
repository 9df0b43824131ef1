"""Deformable multi-head attention of DAT / DAT++ (official ``DAttentionBaseline``)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..probe import Probe
from .norm import LayerNorm2d


def key_reference_points(h: int, w: int, dtype: torch.dtype, device: torch.device
                         ) -> torch.Tensor:
    """Reference point of each key cell in the official normalisation, ``(h, w, 2)`` as (y, x).

    The official code maps cell centre ``i + 0.5`` to ``(i + 0.5) / (n - 1) * 2 - 1``. A grid
    with one row (or column) has no such scale; its single reference is put at the centre, 0.
    """
    return torch.stack(torch.meshgrid(_centres(h, dtype, device), _centres(w, dtype, device),
                                      indexing='ij'), -1)


def query_grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Query positions ``i / (n - 1) * 2 - 1`` (0 for a single row/column), ``(h, w, 2)``."""
    return torch.stack(torch.meshgrid(_corners(h, dtype, device), _corners(w, dtype, device),
                                      indexing='ij'), -1)


def _centres(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.linspace(0.5, n - 0.5, n, dtype=dtype, device=device) / (n - 1.0) * 2.0 - 1.0


def _corners(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.arange(n, dtype=dtype, device=device) / (n - 1.0) * 2.0 - 1.0


def offset_scale(n: int) -> float:
    """Official offset range ``1 / (n - 1)`` of a key axis with n cells (1 when n == 1)."""
    return 1.0 / (n - 1.0) if n > 1 else 1.0


class DeformableAttention(nn.Module):
    """Deformable attention: keys/values are bilinearly sampled at learned offsets from a grid.

    Queries come from every position of the ``(B, C, H, W)`` input. A light conv network on the
    queries of each group predicts offsets on a key grid of ``(Hk, Wk) ~ (H, W) / stride``;
    keys and values are projected from the input sampled there, then attended to by all
    queries, optionally with a relative position bias. Parameter names follow the official
    ``DAttentionBaseline``; the attention itself runs through
    ``F.scaled_dot_product_attention`` with the bias (if any) as an additive mask.

    Args:
        dim: channels C.
        heads: attention heads; head channels are ``dim // heads``.
        groups: offset groups (each shares one set of offsets over ``heads // groups`` heads).
        q_size: (H, W) of the query map at pre-training; sizes the ``rpe_table``.
        stride: key grid stride of the offset network.
        offset_range_factor: >= 0: offsets are ``tanh`` scaled by ``factor / (Hk - 1)``;
            < 0: raw offsets, positions clamped to [-1, 1].
        use_pe: add a relative position bias (or, with ``dwc_pe``, a conv positional term).
        dwc_pe: positional term is a depth-wise 3x3 conv of the queries.
        fixed_pe: a learned bias per (query, key) pair, only valid at ``q_size``.
        log_cpb: continuous bias from an MLP of log-spaced displacements (Swin-V2 style).
        no_off: no offsets: keys are average-pooled on the regular grid.
        ksize: kernel of the depth-wise offset conv.
        attn_drop, proj_drop: dropout rates.
    """

    def __init__(self, dim: int, heads: int, groups: int, q_size: Tuple[int, int],
                 stride: int = 1, offset_range_factor: float = -1, use_pe: bool = True,
                 dwc_pe: bool = False, fixed_pe: bool = False, log_cpb: bool = False,
                 no_off: bool = False, ksize: int = 3, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.sampling_probe = Probe()  # identity; see forward
        if dim % heads != 0:
            raise ValueError(f'dim {dim} is not divisible by heads {heads}')
        if groups < 1 or heads % groups != 0:
            raise ValueError(f'heads {heads} must be a positive multiple of groups {groups}')
        if stride < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        self.dim = dim
        self.n_heads = heads
        self.n_head_channels = dim // heads
        self.scale = self.n_head_channels ** -0.5
        self.n_groups = groups
        self.n_group_channels = dim // groups
        self.n_group_heads = heads // groups
        self.q_h, self.q_w = q_size
        self.kv_h, self.kv_w = self.q_h // stride, self.q_w // stride
        self.stride = stride
        self.ksize = ksize
        self.offset_range_factor = offset_range_factor
        self.use_pe, self.dwc_pe, self.fixed_pe = use_pe, dwc_pe, fixed_pe
        self.log_cpb, self.no_off = log_cpb, no_off
        self.attn_drop = attn_drop

        gc = self.n_group_channels
        pad = ksize // 2 if ksize != stride else 0
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, ksize, stride, pad, groups=gc),
            LayerNorm2d(gc),
            nn.GELU(),
            nn.Conv2d(gc, 2, 1, 1, 0, bias=False),
        )
        if no_off:
            self.conv_offset.requires_grad_(False)
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rpe_table = self._build_rpe_table() if use_pe and not no_off else None

    def _build_rpe_table(self):
        if self.dwc_pe:
            return nn.Conv2d(self.dim, self.dim, 3, 1, 1, groups=self.dim)
        if self.fixed_pe:
            table = nn.Parameter(torch.zeros(self.n_heads, self.q_h * self.q_w,
                                             self.kv_h * self.kv_w))
        elif self.log_cpb:
            return nn.Sequential(nn.Linear(2, 32, bias=True), nn.ReLU(inplace=True),
                                 nn.Linear(32, self.n_group_heads, bias=False))
        else:
            table = nn.Parameter(torch.zeros(self.n_heads, self.q_h * 2 - 1, self.q_w * 2 - 1))
        nn.init.trunc_normal_(table, std=0.01)
        return table

    def sampling_positions(self, q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Deformed key positions from the queries ``(B, C, H, W)``.

        Returns:
            pos: (B*g, Hk, Wk, 2) normalised (y, x) sampling positions.
            reference: (Hk, Wk, 2) the undeformed reference points.
        """
        b, _, h, w = q.shape
        q_off = q.reshape(b * self.n_groups, self.n_group_channels, h, w)
        offset = self.conv_offset(q_off)  # (B*g, 2, Hk, Wk)
        hk, wk = offset.shape[-2:]
        reference = key_reference_points(hk, wk, q.dtype, q.device)
        if self.no_off:
            offset = torch.zeros_like(offset)
        elif self.offset_range_factor >= 0:
            offset_range = offset.new_tensor([offset_scale(hk), offset_scale(wk)])
            offset = offset.tanh() * (offset_range * self.offset_range_factor).view(1, 2, 1, 1)
        pos = offset.permute(0, 2, 3, 1) + reference
        if self.offset_range_factor < 0:
            pos = pos.clamp(-1.0, 1.0)
        return pos, reference

    def _sample_keys(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Input sampled at ``pos``: (B*g, Cg, Hk, Wk)."""
        b, c, h, w = x.shape
        if self.no_off:
            sampled = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
            if sampled.shape[-2:] != pos.shape[1:3]:
                raise ValueError(
                    f'no_off pools a {h}x{w} map to {tuple(sampled.shape[-2:])}, but the '
                    f'key grid is {tuple(pos.shape[1:3])}; use a size divisible by the stride')
            return sampled.reshape(b * self.n_groups, self.n_group_channels, *pos.shape[1:3])
        return F.grid_sample(x.reshape(b * self.n_groups, self.n_group_channels, h, w),
                             pos.flip(-1), mode='bilinear', align_corners=True)

    def position_bias(self, pos: torch.Tensor, h: int, w: int) -> Optional[torch.Tensor]:
        """Additive attention bias (B, heads, H*W, Ns), or None (no bias / dwc_pe)."""
        if self.rpe_table is None or self.dwc_pe:
            return None
        bg, hk, wk, _ = pos.shape
        b = bg // self.n_groups
        n_sample = hk * wk
        if self.fixed_pe:
            if (h * w, n_sample) != tuple(self.rpe_table.shape[1:]):
                raise ValueError(
                    f'fixed_pe was built for {self.q_h}x{self.q_w} queries and '
                    f'{self.kv_h}x{self.kv_w} keys, got {h}x{w} and {hk}x{wk}')
            return self.rpe_table.unsqueeze(0)
        q_grid = query_grid(h, w, pos.dtype, pos.device).reshape(1, h * w, 1, 2)
        displacement = q_grid - pos.reshape(bg, 1, n_sample, 2)  # (B*g, HW, Ns, 2)
        if self.log_cpb:
            displacement = displacement * 4.0
            displacement = torch.sign(displacement) * torch.log2(displacement.abs() + 1.0) \
                / math.log2(8.0)
            bias = self.rpe_table(displacement)  # (B*g, HW, Ns, hg)
            bias = bias.view(b, self.n_groups, h * w, n_sample, self.n_group_heads)
            return bias.permute(0, 1, 4, 2, 3).reshape(b, self.n_heads, h * w, n_sample)
        table = self.rpe_table.view(1, self.n_groups, self.n_group_heads,
                                    *self.rpe_table.shape[-2:])
        table = table.expand(b, -1, -1, -1, -1).reshape(bg, self.n_group_heads,
                                                         *self.rpe_table.shape[-2:])
        bias = F.grid_sample(table, (displacement * 0.5).flip(-1), mode='bilinear',
                             align_corners=True)  # (B*g, hg, HW, Ns)
        return bias.view(b, self.n_heads, h * w, n_sample)

    def forward(self, x: torch.Tensor):
        """(B, C, H, W) -> (out (B, C, H, W), pos (B, g, Hk, Wk, 2), ref (B, g, Hk, Wk, 2))."""
        b, c, h, w = x.shape
        q = self.proj_q(x)
        pos, reference = self.sampling_positions(q)
        # extension point: hooks on sampling_probe see pos (B*g, Hk, Wk, 2), reference
        pos, reference = self.sampling_probe(pos, reference)
        hk, wk = pos.shape[1:3]
        n_sample = hk * wk
        sampled = self._sample_keys(x, pos).reshape(b, c, 1, n_sample)
        heads, hc = self.n_heads, self.n_head_channels
        k = self.proj_k(sampled).view(b, heads, hc, n_sample).transpose(2, 3)
        v = self.proj_v(sampled).view(b, heads, hc, n_sample).transpose(2, 3)
        q_heads = q.view(b, heads, hc, h * w).transpose(2, 3)  # (B, heads, HW, hc)
        bias = self.position_bias(pos, h, w)
        out = F.scaled_dot_product_attention(
            q_heads, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        if self.rpe_table is not None and self.dwc_pe:
            out = out + self.rpe_table(q)
        y = self.proj_drop(self.proj_out(out))
        groups_shape = (b, self.n_groups, hk, wk, 2)
        return y, pos.reshape(groups_shape), reference.expand(groups_shape)
