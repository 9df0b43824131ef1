"""Neighbourhood attention (N block) in plain PyTorch, with natten used when installed."""
import importlib.util
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

NATTEN_AVAILABLE = importlib.util.find_spec('natten') is not None


def neighborhood_indices(length: int, kernel_size: int, device: torch.device
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key indices and relative-bias indices of each query along one axis.

    Each query attends to ``kernel_size`` consecutive keys centred on it, the window being
    shifted inwards at the borders (natten's definition, dilation 1).

    Returns:
        keys: (length, kernel_size) absolute key positions.
        rel: (length, kernel_size) indices into a ``2*kernel_size-1`` bias axis.
    """
    pos = torch.arange(length, device=device)
    start = (pos - kernel_size // 2).clamp(0, length - kernel_size)
    keys = start[:, None] + torch.arange(kernel_size, device=device)
    rel = keys - pos[:, None] + kernel_size - 1
    return keys, rel


def neighborhood_attention_2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              kernel_size: int, rpb: Optional[torch.Tensor] = None,
                              attn_drop: float = 0.0) -> torch.Tensor:
    """Neighbourhood attention; q is already scaled.

    Args:
        q, k, v: (B, heads, H, W, hd) with H, W >= kernel_size.
        rpb: optional (heads, 2k-1, 2k-1) relative position bias.

    Returns:
        (B, heads, H, W, hd)
    """
    b, n, h, w, d = q.shape
    ks = kernel_size
    keys_h, rel_h = neighborhood_indices(h, ks, q.device)
    keys_w, rel_w = neighborhood_indices(w, ks, q.device)

    def windows(t: torch.Tensor) -> torch.Tensor:
        # (B, n, H, W, d) -> (B, n, H, W, d, k*k). Gathering whole unfolded windows keeps the
        # copied chunks large (d*k*k values), much faster than gathering rows and columns.
        t = t.unfold(2, ks, 1).unfold(3, ks, 1)  # view (B, n, H-k+1, W-k+1, d, k, k)
        t = t.index_select(2, keys_h[:, 0]).index_select(3, keys_w[:, 0])
        return t.reshape(b, n, h, w, d, ks * ks)

    logits = torch.einsum('bnhwd,bnhwdk->bnhwk', q, windows(k))
    if rpb is not None:
        bias = rpb[:, rel_h[:, :, None, None], rel_w[None, None, :, :]]  # (n, H, k, W, k)
        logits = logits + bias.permute(0, 1, 3, 2, 4).reshape(1, n, h, w, ks * ks)
    attn = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return torch.einsum('bnhwk,bnhwdk->bnhwd', attn, windows(v))


class NeighborhoodAttention2D(nn.Module):
    """Neighbourhood attention on ``(B, C, H, W)`` maps (official N block, natten semantics).

    Maps smaller than the kernel are zero-padded at the bottom/right before the qkv projection
    and cropped afterwards, as natten's module does. Uses ``natten`` when it is installed and
    ``use_natten`` is set, a plain PyTorch gather otherwise.

    Args:
        dim: channels C.
        kernel_size: odd neighbourhood side.
        num_heads: number of heads.
        attn_drop, proj_drop: dropout rates.
        rel_pos_bias: learn a ``(heads, 2k-1, 2k-1)`` bias ``rpb`` (off in DAT++).
    """

    def __init__(self, dim: int, kernel_size: int, num_heads: int, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rel_pos_bias: bool = False,
                 qkv_bias: bool = True, use_natten: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.attn_drop = attn_drop
        self.use_natten = use_natten and NATTEN_AVAILABLE
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1,
                                                2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter('rpb', None)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, q, k, v):
        """q, k, v: (B, heads, H, W, hd), q scaled."""
        drop = self.attn_drop if self.training else 0.0
        if self.use_natten:  # pragma: no cover - natten is an optional extra
            from natten.functional import na2d_av, na2d_qk
            attn = na2d_qk(q, k, self.kernel_size, 1, rpb=self.rpb).softmax(dim=-1)
            attn = F.dropout(attn, p=drop, training=drop > 0)
            return na2d_av(attn, v, self.kernel_size, 1)
        return neighborhood_attention_2d(q, k, v, self.kernel_size, self.rpb, drop)

    def forward(self, x: torch.Tensor):
        """(B, C, H, W) -> ((B, C, H, W), None, None)."""
        b, c, h0, w0 = x.shape
        x = x.permute(0, 2, 3, 1)
        pad_h = max(0, self.kernel_size - h0)
        pad_w = max(0, self.kernel_size - w0)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        h, w = x.shape[1:3]
        qkv = self.qkv(x).view(b, h, w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # (B, heads, H, W, hd)
        out = self._attend(q * self.scale, k, v)
        out = out.permute(0, 2, 3, 1, 4).reshape(b, h, w, c)[:, :h0, :w0]
        out = self.proj_drop(self.proj(out))
        return out.permute(0, 3, 1, 2), None, None
