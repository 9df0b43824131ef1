"""Attention blocks of DAT / DAT++ written from their equations, one image and one head at a time.

* :class:`DeformableAttentionReference` (D): keys and values are the input sampled bilinearly
  at deformed positions of a key grid; every query attends to all of them, with a bias read
  bilinearly from ``rpe_table`` at the query-key displacement (or one of the other position
  terms).
* :class:`WindowAttentionReference` (L, and S with a shift): attention inside non-overlapping
  windows of the map zero-padded at the bottom/right, with Swin's relative-position table; S
  rolls the map by ``-shift`` first and masks pairs from different regions of the rolled map.
* :class:`NeighborhoodAttentionReference` (N): natten's neighbourhood attention through
  :func:`dat_det.testing.natten_reference.neighborhood_attention_per_query`.

Inputs and outputs are ``(B, C, H, W)``. Dropout and stochastic depth are not modelled (the
reference is compared in eval mode).
"""
import math
from typing import Optional, Tuple

import torch
from torch import nn

from ..natten_reference import neighborhood_attention_per_query
from .details import (
    DETAILS,
    Details,
    key_axis,
    offset_conv_padding,
    query_axis,
    sampling_position,
)
from .holders import ChannelNormWeights, ConvWeights, Empty, LinearWeights
from .primitives import (
    bilinear_sample,
    block_average,
    channel_layer_norm,
    depthwise_conv2d,
    gelu,
    normalised_to_pixel,
    pad_bottom_right_to,
    pointwise,
    softmax,
    zero_pad,
)


def _linear(x: torch.Tensor, holder: LinearWeights) -> torch.Tensor:
    """``x @ W^T + b`` on the last axis."""
    out = x @ holder.weight.t()
    return out if holder.bias is None else out + holder.bias


class DeformableAttentionReference(nn.Module):
    """Deformable attention (official ``DAttentionBaseline`` names), from its equations.

    Per image and offset group ``g`` (channels ``g*C/G .. (g+1)*C/G``): the group's query
    channels go through the offset network (depth-wise ``ksize`` conv of stride ``stride``,
    channel LayerNorm, GELU, 1x1 conv to 2 channels (y, x)), giving raw offsets on an
    ``Hk x Wk`` key grid; positions follow from the reference points and the offset range rule
    (:func:`.details.sampling_position`), and the group's input channels are sampled there.
    Keys and values are 1x1 projections of the samples of all groups; head ``h`` uses the
    positions of group ``h // (heads / groups)``.
    """

    def __init__(self, dim: int, num_heads: int, groups: int, q_size: Tuple[int, int],
                 stride: int = 1, offset_range_factor: float = -1, use_pe: bool = True,
                 dwc_pe: bool = False, fixed_pe: bool = False, log_cpb: bool = False,
                 no_off: bool = False, ksize: int = 3, details: Details = DETAILS['v2']
                 ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.groups = dim, num_heads, groups
        self.head_dim = dim // num_heads
        self.group_dim = dim // groups
        self.heads_per_group = num_heads // groups
        self.q_size = tuple(q_size)
        self.stride, self.ksize = stride, ksize
        self.factor = offset_range_factor
        self.use_pe, self.dwc_pe, self.fixed_pe = use_pe, dwc_pe, fixed_pe
        self.log_cpb, self.no_off = log_cpb, no_off
        self.details = details
        gc = self.group_dim
        self.conv_offset = nn.ModuleList([ConvWeights(gc, 1, ksize), ChannelNormWeights(gc),
                                          Empty(), ConvWeights(2, gc, 1, bias=False)])
        self.proj_q = ConvWeights(dim, dim, 1)
        self.proj_k = ConvWeights(dim, dim, 1)
        self.proj_v = ConvWeights(dim, dim, 1)
        self.proj_out = ConvWeights(dim, dim, 1)
        qh, qw = self.q_size
        if not use_pe or no_off:
            self.rpe_table = None
        elif dwc_pe:
            self.rpe_table = ConvWeights(dim, 1, 3)
        elif fixed_pe:
            kh, kw = qh // stride, qw // stride
            self.rpe_table = nn.Parameter(torch.randn(num_heads, qh * qw, kh * kw) * 0.01)
        elif log_cpb:
            self.rpe_table = nn.ModuleList([LinearWeights(32, 2), Empty(),
                                            LinearWeights(self.heads_per_group, 32, bias=False)])
        else:
            self.rpe_table = nn.Parameter(torch.randn(num_heads, 2 * qh - 1, 2 * qw - 1) * 0.01)

    def offsets(self, q_group: torch.Tensor) -> torch.Tensor:
        """Raw offsets ``(2, Hk, Wk)`` from one group's queries ``(Cg, H, W)``."""
        c0, c1, c3 = self.conv_offset[0], self.conv_offset[1].norm, self.conv_offset[3]
        pad = offset_conv_padding(self.ksize, self.stride, self.details)
        t = depthwise_conv2d(q_group[None], c0.weight, c0.bias, self.stride, pad)
        t = gelu(channel_layer_norm(t, c1.weight, c1.bias, c1.eps))
        return pointwise(t, c3.weight, None)[0]

    def positions(self, raw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sampling positions and reference points, each ``(Hk, Wk, 2)`` (y, x)."""
        hk, wk = raw.shape[-2:]
        ref_y = key_axis(hk, self.details, raw.dtype).to(raw.device)[:, None].expand(hk, wk)
        ref_x = key_axis(wk, self.details, raw.dtype).to(raw.device)[None, :].expand(hk, wk)
        if self.no_off:
            raw = torch.zeros_like(raw)
        pos_y = sampling_position(ref_y, raw[0], hk, self.factor, self.details)
        pos_x = sampling_position(ref_x, raw[1], wk, self.factor, self.details)
        return torch.stack([pos_y, pos_x], -1), torch.stack([ref_y, ref_x], -1)

    def sample(self, x_group: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One group's input ``(Cg, H, W)`` at the positions ``(Hk, Wk, 2)`` -> ``(Cg, Hk*Wk)``
        (for ``no_off``: the average of each ``stride x stride`` cell)."""
        h, w = x_group.shape[-2:]
        if self.no_off:
            pooled = block_average(x_group[None], self.stride)[0]
            if pooled.shape[-2:] != pos.shape[:2]:
                raise ValueError(f'no_off: pooled map {tuple(pooled.shape[-2:])} is not the '
                                 f'key grid {tuple(pos.shape[:2])}')
            return pooled.flatten(1)
        ac = self.details.sampling_align_corners
        rows = normalised_to_pixel(pos[..., 0], h, ac)
        cols = normalised_to_pixel(pos[..., 1], w, ac)
        return bilinear_sample(x_group, rows, cols).flatten(1)

    def bias(self, head: int, pos: torch.Tensor, h: int, w: int) -> Optional[torch.Tensor]:
        """Additive bias ``(H*W, Nk)`` of one head, queries and keys row-major; ``pos``
        ``(Hk, Wk, 2)`` are the positions of the head's group."""
        if self.rpe_table is None or self.dwc_pe:
            return None
        if self.fixed_pe:
            table = self.rpe_table[head]
            if table.shape != (h * w, pos.shape[0] * pos.shape[1]):
                raise ValueError(f'fixed_pe table {tuple(table.shape)} does not fit {h}x{w} '
                                 f'queries and {tuple(pos.shape[:2])} keys')
            return table
        qy = query_axis(h, self.details, pos.dtype).to(pos.device)[:, None].expand(h, w)
        qx = query_axis(w, self.details, pos.dtype).to(pos.device)[None, :].expand(h, w)
        qy, qx = qy.reshape(-1, 1), qx.reshape(-1, 1)
        ky, kx = pos[..., 0].reshape(1, -1), pos[..., 1].reshape(1, -1)
        if self.details.bias_displacement == 'query-key':
            dy, dx = qy - ky, qx - kx  # (H*W, Nk)
        else:
            dy, dx = ky - qy, kx - qx
        if self.log_cpb:
            d = torch.stack([dy, dx], -1) * 4.0
            d = torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8.0)
            first, last = self.rpe_table[0], self.rpe_table[2]
            hidden = torch.relu(_linear(d, first))
            return _linear(hidden, last)[..., head % self.heads_per_group]
        # the table spans displacements -2..2 per axis, read with -1/1 at its corner cells
        table = self.rpe_table[head:head + 1]
        rows = normalised_to_pixel(dy / 2.0, table.shape[-2], align_corners=True)
        cols = normalised_to_pixel(dx / 2.0, table.shape[-1], align_corners=True)
        return bilinear_sample(table, rows, cols)[0]

    def forward(self, x: torch.Tensor):
        """``(B, C, H, W)`` -> (out ``(B, C, H, W)``, pos and ref ``(B, G, Hk, Wk, 2)``)."""
        b, c, h, w = x.shape
        hd, gc = self.head_dim, self.group_dim
        q_all = pointwise(x, self.proj_q.weight, self.proj_q.bias)
        outs, all_pos, all_ref = [], [], []
        for i in range(b):
            group_pos, group_ref, samples = [], [], []
            for g in range(self.groups):
                channels = slice(g * gc, (g + 1) * gc)
                pos, ref = self.positions(self.offsets(q_all[i, channels]))
                group_pos.append(pos)
                group_ref.append(ref)
                samples.append(self.sample(x[i, channels], pos))
            sampled = torch.cat(samples, 0)[:, None]  # (C, 1, Nk)
            k = pointwise(sampled[None], self.proj_k.weight, self.proj_k.bias)[0, :, 0]
            v = pointwise(sampled[None], self.proj_v.weight, self.proj_v.bias)[0, :, 0]
            heads = []
            for head in range(self.num_heads):
                channels = slice(head * hd, (head + 1) * hd)
                q = q_all[i, channels].reshape(hd, h * w).t()  # (H*W, hd)
                logits = q @ k[channels] * hd ** -0.5  # (H*W, Nk)
                bias = self.bias(head, group_pos[head // self.heads_per_group], h, w)
                if bias is not None:
                    logits = logits + bias
                heads.append((softmax(logits) @ v[channels].t()).t().reshape(hd, h, w))
            out = torch.cat(heads, 0)[None]
            if self.dwc_pe and self.rpe_table is not None:
                out = out + depthwise_conv2d(q_all[i:i + 1], self.rpe_table.weight,
                                             self.rpe_table.bias, 1, 1)
            outs.append(pointwise(out, self.proj_out.weight, self.proj_out.bias)[0])
            all_pos.append(torch.stack(group_pos))
            all_ref.append(torch.stack(group_ref))
        return torch.stack(outs), torch.stack(all_pos), torch.stack(all_ref)


def window_bias_index(window: Tuple[int, int], details: Details) -> torch.Tensor:
    """``(N, N)`` row of Swin's ``((2Wh-1)(2Ww-1), heads)`` table for each query/key pair of a
    window (tokens row-major)."""
    wh, ww = window
    y = torch.arange(wh * ww) // ww
    x = torch.arange(wh * ww) % ww
    dy, dx = y[:, None] - y[None, :], x[:, None] - x[None, :]  # query - key
    if details.window_bias == 'key-query':
        dy, dx = -dy, -dx
    return (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)


def shift_regions(length: int, window: int, shift: int) -> torch.Tensor:
    """Region of each position of a rolled axis: 0 before the last window, 1 in the last window
    before the rolled-in strip, 2 in the strip of ``shift`` positions that wrapped around."""
    p = torch.arange(length)
    return (p >= length - window).long() + (p >= length - shift).long()


class WindowAttentionReference(nn.Module):
    """Window attention (L; S when ``shift > 0``), official ``LocalAttention`` /
    ``ShiftWindowAttention`` names.

    ``mask_size`` (S only): registers the release's ``attn_mask`` buffer of that (pre-training)
    map size, as classification checkpoints carry it; the forward builds the mask of each
    input's padded size itself.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int = 0,
                 mask_size: Optional[Tuple[int, int]] = None,
                 details: Details = DETAILS['v2']) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.window = (window_size, window_size)
        self.shift = shift
        self.details = details
        self.proj_qkv = LinearWeights(3 * dim, dim)
        self.proj_out = LinearWeights(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window_size - 1) ** 2, num_heads) * 0.01)
        self.register_buffer('relative_position_index',
                             window_bias_index(self.window, DETAILS['v2']))
        if shift and mask_size is not None:
            padded = [-(-n // window_size) * window_size for n in mask_size]
            self.register_buffer('attn_mask', self._window_masks(*padded, DETAILS['v2']))

    def _labels(self, hp: int, wp: int) -> torch.Tensor:
        """Region label of each position of the rolled ``hp x wp`` map."""
        rows = shift_regions(hp, self.window[0], self.shift)
        cols = shift_regions(wp, self.window[1], self.shift)
        return rows[:, None] * 3 + cols[None, :]

    def _window_masks(self, hp: int, wp: int, details: Details) -> torch.Tensor:
        """``(nW, N, N)``: -100 for pairs of different regions, else 0 (windows row-major)."""
        labels = self._labels(hp, wp)
        wh, ww = self.window
        masks = []
        for r in range(hp // wh):
            for c in range(wp // ww):
                lab = labels[r * wh:(r + 1) * wh, c * ww:(c + 1) * ww].reshape(-1)
                differ = (lab[:, None] != lab[None, :]).float()
                masks.append(differ * -100.0 if details.shift_mask else differ * 0.0)
        return torch.stack(masks)

    def _window(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Attention among the ``(N, C)`` tokens of one window -> ``(N, C)``."""
        c, hd = self.dim, self.head_dim
        qkv = _linear(tokens, self.proj_qkv)
        index = window_bias_index(self.window, self.details).to(tokens.device)
        heads = []
        for head in range(self.num_heads):
            q = qkv[:, head * hd:(head + 1) * hd]
            k = qkv[:, c + head * hd:c + (head + 1) * hd]
            v = qkv[:, 2 * c + head * hd:2 * c + (head + 1) * hd]
            logits = q @ k.t() * hd ** -0.5 + self.relative_position_bias_table[index, head]
            if mask is not None:
                logits = logits + mask
            heads.append(softmax(logits) @ v)
        return _linear(torch.cat(heads, 1), self.proj_out)

    def forward(self, x: torch.Tensor):
        """``(B, C, H, W)`` -> (``(B, C, H, W)``, None, None)."""
        b, c, h, w = x.shape
        wh, ww = self.window
        x = pad_bottom_right_to(x, wh, ww)
        hp, wp = x.shape[-2:]
        masks = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(2, 3))
            masks = self._window_masks(hp, wp, self.details).to(x.device, x.dtype)
        images = []
        for i in range(b):
            rows = []
            for r in range(hp // wh):
                cols = []
                for col in range(wp // ww):
                    patch = x[i, :, r * wh:(r + 1) * wh, col * ww:(col + 1) * ww]
                    mask = None if masks is None else masks[r * (wp // ww) + col]
                    out = self._window(patch.reshape(c, wh * ww).t(), mask)
                    cols.append(out.t().reshape(c, wh, ww))
                rows.append(torch.cat(cols, 2))
            images.append(torch.cat(rows, 1))
        out = torch.stack(images)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(2, 3))
        return out[:, :, :h, :w], None, None


class NeighborhoodAttentionReference(nn.Module):
    """Neighbourhood attention (N; natten's module names ``qkv``, ``rpb``, ``proj``).

    A map smaller than the kernel is zero-padded at the bottom/right before the qkv projection
    and cropped before the output projection.
    """

    def __init__(self, dim: int, kernel_size: int, num_heads: int,
                 details: Details = DETAILS['v2']) -> None:
        super().__init__()
        self.dim, self.kernel_size, self.num_heads = dim, kernel_size, num_heads
        self.head_dim = dim // num_heads
        self.details = details
        self.qkv = LinearWeights(3 * dim, dim)
        self.rpb = nn.Parameter(torch.randn(num_heads, 2 * kernel_size - 1,
                                            2 * kernel_size - 1) * 0.02)
        self.proj = LinearWeights(dim, dim)

    def forward(self, x: torch.Tensor):
        """``(B, C, H, W)`` -> (``(B, C, H, W)``, None, None)."""
        b, c, h, w = x.shape
        ks, n, hd = self.kernel_size, self.num_heads, self.head_dim
        padded = zero_pad(x, 0, max(0, ks - h), 0, max(0, ks - w))
        hp, wp = padded.shape[-2:]
        qkv = _linear(padded.permute(0, 2, 3, 1), self.qkv)  # (B, Hp, Wp, 3C)
        # channel t*C + head*hd + d holds component d of head ``head`` of q, k, v (t = 0, 1, 2)
        q, k, v = qkv.view(b, hp, wp, 3, n, hd).permute(3, 0, 4, 1, 2, 5)
        rpb = self.rpb if self.details.neighborhood_bias == 'natten' else self.rpb.flip(-1, -2)
        out = neighborhood_attention_per_query(q * hd ** -0.5, k, v, ks, rpb)
        out = out.permute(0, 2, 3, 1, 4).reshape(b, hp, wp, c)[:, :h, :w]
        return _linear(out, self.proj).permute(0, 3, 1, 2), None, None
