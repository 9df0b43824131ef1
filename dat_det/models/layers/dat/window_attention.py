"""Local (L) and shifted (S) window attention on channel-first maps."""
import math
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import gen_relative_position_index

from .padding import pad_to_multiple

# Value the official code adds to logits of query/key pairs from different shifted regions.
SHIFT_MASK_VALUE = -100.0

# What every attention block returns: the output map and, for deformable blocks, the sampling
# positions and reference points (None for the others).
AttentionOutput = Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


def windows_partition(x: torch.Tensor, window: Tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, nW, Wh*Ww, C); H and W must be multiples of the window."""
    b, c, h, w = x.shape
    wh, ww = window
    x = x.view(b, c, h // wh, wh, w // ww, ww)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // wh) * (w // ww), wh * ww, c)


def windows_merge(x: torch.Tensor, window: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """(B, nW, Wh*Ww, C) -> (B, C, H, W), inverse of :func:`windows_partition`."""
    b, _, _, c = x.shape
    wh, ww = window
    h, w = size
    x = x.view(b, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def shift_window_mask(size: Tuple[int, int], window: Tuple[int, int], shift: int,
                      device: torch.device, mask_value: float = SHIFT_MASK_VALUE
                      ) -> torch.Tensor:
    """(nW, N, N) additive mask of shifted-window attention on a padded map of ``size``:
    ``mask_value`` between positions of different regions, 0 within one.

    Along each axis of length n the rolled map has three regions, ``[0, n - window)``,
    ``[n - window, n - shift)`` and ``[n - shift, n)``; a position's region is the number of
    those bounds it has passed, its 2-D region ``3 * row_region + column_region``.
    """
    rows = torch.arange(size[0], device=device)
    cols = torch.arange(size[1], device=device)
    row_region = (rows >= size[0] - window[0]).long() + (rows >= size[0] - shift).long()
    col_region = (cols >= size[1] - window[1]).long() + (cols >= size[1] - shift).long()
    regions = (row_region[:, None] * 3 + col_region[None, :]).float()
    regions = windows_partition(regions[None, None], window).squeeze(-1)[0]  # (nW, N)
    diff = regions.unsqueeze(1) - regions.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, mask_value)


class LocalAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows with a relative position bias.

    Maps whose size is not a multiple of the window are zero-padded at the bottom/right and
    cropped back, as mmdet's Swin does.

    Args:
        dim: channels C.
        num_heads: number of heads.
        window_size: window side (int or (Wh, Ww)).
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, window_size, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.window_size = (window_size, window_size) if isinstance(window_size, int) \
            else tuple(window_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_drop = attn_drop
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        # torch's trunc_normal_: timm's (used by the release) is the same algorithm
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        # (Wh*Ww, Wh*Ww) indices into the ((2Wh-1)*(2Ww-1), heads) table, Swin's layout.
        self.register_buffer('relative_position_index',
                             gen_relative_position_index(self.window_size), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, Wh*Ww, Wh*Ww)."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def _attend(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Window attention of a padded ``(B, C, H, W)`` map; mask is (nW, N, N) or None."""
        b, c, h, w = x.shape
        windows = windows_partition(x, self.window_size)  # (B, nW, N, C)
        n_win, n = windows.shape[1], windows.shape[2]
        qkv = self.proj_qkv(windows).view(b, n_win, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, nW, heads, N, hd)
        bias = self.relative_position_bias().unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            bias = bias + mask.unsqueeze(1)  # (nW, heads, N, N)
        bias = bias.to(q.dtype)
        drop = self.attn_drop if self.training else 0.0
        # One 4-D call per image, windows as the batch: the fused CPU kernel takes only 4-D
        # inputs (5-D ones run the unfused path, which materialises the logits).
        out = torch.stack([F.scaled_dot_product_attention(q[i], k[i], v[i], attn_mask=bias,
                                                          dropout_p=drop, scale=self.scale)
                           for i in range(b)])  # (B, nW, heads, N, hd)
        out = out.transpose(2, 3).reshape(b, n_win, n, c)
        out = self.proj_drop(self.proj_out(out))
        return windows_merge(out, self.window_size, (h, w))

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        """(B, C, H, W) -> ((B, C, H, W), None, None)."""
        h, w = x.shape[-2:]
        out = self._attend(pad_to_multiple(x, self.window_size), None)
        return out[:, :, :h, :w], None, None


class ShiftWindowAttention(LocalAttention):
    """Window attention on a map rolled by ``shift_size`` (official S block).

    The shift mask is built for the padded size of each input; the masks of the last
    ``MASK_CACHE_SIZE`` sizes are cached (multi-scale training sees many sizes).
    """

    MASK_CACHE_SIZE = 4
    # the cache is eager-only: a compiled module builds the mask in each call
    __jit_ignored_attributes__ = ['_mask_cache']

    def __init__(self, dim: int, num_heads: int, window_size, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, shift_size: Optional[int] = None) -> None:
        super().__init__(dim, num_heads, window_size, attn_drop, proj_drop)
        self.shift_size = math.ceil(min(self.window_size) / 2) if shift_size is None \
            else shift_size
        if not 0 < self.shift_size < min(self.window_size):
            raise ValueError(f'shift size {self.shift_size} must lie in (0, window size)')
        self._mask_cache: OrderedDict = OrderedDict()

    def shift_mask(self, size: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """(nW, N, N) additive mask for a padded map of ``size``, cached per size."""
        key = (size, str(device))
        if key in self._mask_cache:
            self._mask_cache.move_to_end(key)
        else:
            self._mask_cache[key] = shift_window_mask(size, self.window_size, self.shift_size,
                                                      device)
            if len(self._mask_cache) > self.MASK_CACHE_SIZE:
                self._mask_cache.popitem(last=False)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        """(B, C, H, W) -> ((B, C, H, W), None, None)."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        s = self.shift_size
        shifted = torch.roll(x, shifts=(-s, -s), dims=(2, 3))
        # a compiled module holds no Python cache, and a trace (ONNX export) must build the
        # mask from its traced size rather than keep the cached one as a constant
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            mask = shift_window_mask((x.shape[-2], x.shape[-1]), self.window_size, s, x.device)
        else:
            mask = self.shift_mask((x.shape[-2], x.shape[-1]), x.device)
        out = self._attend(shifted, mask)
        out = torch.roll(out, shifts=(s, s), dims=(2, 3))
        return out[:, :, :h, :w], None, None
