"""Neighbourhood attention (N block): natten's semantics in plain PyTorch, natten when installed.

natten's definition (dilation 1, kernel ``k``, ``r = k // 2``), per axis of length ``n``: query
``i`` attends to the ``k`` keys starting at ``clamp(i - r, 0, n - k)`` (the window is shifted
inwards at the borders rather than cut), and the key at ``s`` takes the relative-position bias
``rpb[head, s - i + k - 1]`` (natten's ``get_window_start`` / ``get_pb_start``).

Two plain-PyTorch implementations:

* :func:`neighborhood_attention_2d`, the reference: gathers the ``k*k`` window of every query
  (a ``k*k`` times larger copy of keys and values) and reduces with einsum.
* :func:`neighborhood_attention_2d_tiled`, the fast path (the default): queries are cut into
  ``tile x tile`` tiles; all windows of a tile lie inside one ``(tile + k - 1)^2`` halo of keys,
  so each tile is one dense attention over its halo with an additive mask that keeps exactly
  the ``k*k`` keys of each query. It runs as ``F.scaled_dot_product_attention`` (the fused CPU
  kernel) over a halo gather about ``((tile + k - 1) / tile)^2`` times the key size.
* :func:`neighborhood_attention_2d_gather`, the export path: the reference's windows gathered
  by ``index_select`` of rows and columns (``Tensor.unfold`` and the tile plan, built from
  Python ints, would freeze the traced size). :class:`NeighborhoodAttention2D` takes it
  during ``torch.onnx.export`` whatever its backend, and as ``backend='gather'``.
"""
import functools
import importlib
import importlib.util
import inspect
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tracing import onnx_exporting

NATTEN_AVAILABLE = importlib.util.find_spec('natten') is not None
BACKENDS = ('auto', 'natten', 'tiled', 'reference', 'gather')
# Query tile side of the fast path: the halo attention does (tile + k - 1)^2 / k^2 times the
# work of an exact gather (4x for k = 7), traded for dense fused kernels; 8 measured fastest on
# CPU among 6..16 at COCO sizes.
DEFAULT_TILE = 8


def natten_api() -> Optional[str]:
    """How the installed natten adds the relative-position bias to its QK op, newest first:
    ``'na2d_qk'`` (0.17: ``na2d_qk(q, k, kernel, dilation, rpb=rpb)``),
    ``'na2d_qk_with_bias'`` (0.15: ``(q, k, rpb, kernel, dilation)``) or ``'natten2dqkrpb'``
    (0.14: ``(q, k, rpb, kernel, dilation)``); None when natten is missing or has no biased
    unfused op (0.20 dropped them)."""
    if not NATTEN_AVAILABLE:
        return None
    functional = importlib.import_module('natten.functional')
    qk = getattr(functional, 'na2d_qk', None)
    if qk is not None and hasattr(functional, 'na2d_av') \
            and 'rpb' in inspect.signature(qk).parameters:
        return 'na2d_qk'
    if hasattr(functional, 'na2d_qk_with_bias') and hasattr(functional, 'na2d_av'):
        return 'na2d_qk_with_bias'
    if hasattr(functional, 'natten2dqkrpb') and hasattr(functional, 'natten2dav'):
        return 'natten2dqkrpb'
    return None


def natten_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                     rpb: Optional[torch.Tensor], attn_drop: float, api: str) -> torch.Tensor:
    """Neighbourhood attention by natten's unfused ops (dilation 1); q already scaled.

    Args:
        q, k, v: (B, heads, H, W, hd) with H, W >= kernel_size.
        rpb: optional (heads, 2k-1, 2k-1) bias.
        api: :func:`natten_api` of the installed natten.

    Returns:
        (B, heads, H, W, hd); natten's logits are (B, heads, H, W, k*k).
    """
    functional = importlib.import_module('natten.functional')
    if api == 'natten2dqkrpb':
        logits = functional.natten2dqkrpb(q, k, rpb, kernel_size, 1)
        av = functional.natten2dav
    elif api == 'na2d_qk_with_bias':
        logits = functional.na2d_qk_with_bias(q, k, rpb, kernel_size, 1)
        av = functional.na2d_av
    else:
        logits = functional.na2d_qk(q, k, kernel_size, 1, rpb=rpb)
        av = functional.na2d_av
    attn = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return av(attn, v, kernel_size, 1)


def window_starts(length: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """First key of each query's window along one axis, ``(length,)`` (natten's clamp)."""
    pos = torch.arange(length, device=device)
    return (pos - kernel_size // 2).clamp(0, length - kernel_size)


def bias_index(keys: torch.Tensor, queries: torch.Tensor, starts: torch.Tensor,
               kernel_size: int) -> torch.Tensor:
    """Index into a ``2k-1`` bias axis of the key at ``keys`` for the query at ``queries``
    whose window starts at ``starts`` (all broadcast together); the one rule of every path.

    natten's index is ``key - query + k - 1``: the key's offset from the query, not its place
    in the (clamped) window, so ``starts`` does not enter it (tests swap in rules that do).
    """
    del starts
    return keys - queries + kernel_size - 1


def neighborhood_indices(length: int, kernel_size: int, device: torch.device
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key indices and relative-bias indices of each query along one axis.

    Returns:
        keys: (length, kernel_size) absolute key positions.
        rel: (length, kernel_size) indices into a ``2*kernel_size-1`` bias axis.
    """
    pos = torch.arange(length, device=device)
    starts = window_starts(length, kernel_size, device)
    keys = starts[:, None] + torch.arange(kernel_size, device=device)
    return keys, bias_index(keys, pos[:, None], starts[:, None], kernel_size)


def window_bias(rpb: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """The relative-position bias of each query's window: ``rpb`` ``(heads, 2k-1, 2k-1)``,
    ``rel_h`` ``(H, k)``, ``rel_w`` ``(W, k)`` -> ``(1, heads, H, W, k*k)``."""
    bias = rpb[:, rel_h[:, :, None, None], rel_w[None, None, :, :]]  # (n, H, k, W, k)
    n, h, ks, w, _ = bias.shape
    return bias.permute(0, 1, 3, 2, 4).reshape(1, n, h, w, ks * ks)


def neighborhood_attention_2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              kernel_size: int, rpb: Optional[torch.Tensor] = None,
                              attn_drop: float = 0.0) -> torch.Tensor:
    """Neighbourhood attention, reference implementation; q is already scaled.

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
        logits = logits + window_bias(rpb, rel_h, rel_w)
    attn = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return torch.einsum('bnhwk,bnhwdk->bnhwd', attn, windows(v))


def neighborhood_attention_2d_gather(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     kernel_size: int, rpb: Optional[torch.Tensor] = None,
                                     attn_drop: float = 0.0) -> torch.Tensor:
    """:func:`neighborhood_attention_2d` by ``index_select`` of key rows and columns, which a
    trace records for every map size (ONNX export). q, k, v ``(B, heads, H, W, hd)``, q
    scaled -> same shape."""
    keys_h, rel_h = neighborhood_indices(q.shape[2], kernel_size, q.device)
    keys_w, rel_w = neighborhood_indices(q.shape[3], kernel_size, q.device)
    logits = torch.einsum('bnhwd,bnhwkd->bnhwk', q, gather_windows(k, keys_h, keys_w, kernel_size))
    if rpb is not None:
        logits = logits + window_bias(rpb, rel_h, rel_w)
    attn = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return torch.einsum('bnhwk,bnhwkd->bnhwd', attn, gather_windows(v, keys_h, keys_w, kernel_size))


def gather_windows(t: torch.Tensor, keys_h: torch.Tensor, keys_w: torch.Tensor,
                   kernel_size: int) -> torch.Tensor:
    """The window of every query by ``index_select`` of rows, then columns: ``t``
    (B, n, H, W, d), key indices ``keys_h`` (H, k), ``keys_w`` (W, k) -> (B, n, H, W, k*k, d)."""
    b, n, h, w, d = t.shape
    ks = kernel_size
    t = t.index_select(2, keys_h.reshape(-1)).view(b, n, h, ks, w, d)
    t = t.index_select(4, keys_w.reshape(-1)).view(b, n, h, ks, w, ks, d)
    return t.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, n, h, w, ks * ks, d)


def _axis_tiles(length: int, kernel_size: int, tile: int, device: torch.device
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Halo of each query tile along one axis.

    Tile ``a`` holds queries ``a*tile .. a*tile+tile-1`` (those past ``length`` are padding
    and take the window of the last query, so no query row is fully masked). Its halo is
    ``span = min(tile + k - 1, length)`` consecutive keys from ``clamp(a*tile - r, 0,
    length - span)``, which contains the window of each of its queries.

    Returns:
        keys: (n_tiles, span) absolute key positions of each tile's halo.
        rel: (n_tiles, tile, span) key offset inside each query's window, ``k - 1 + s - i``
            (natten's bias index), or -1 where the key lies outside the window.
    """
    n_tiles = -(-length // tile)
    span = min(tile + kernel_size - 1, length)
    first = (torch.arange(n_tiles, device=device) * tile - kernel_size // 2).clamp(
        0, length - span)
    keys = first[:, None] + torch.arange(span, device=device)
    queries = (torch.arange(n_tiles, device=device)[:, None] * tile
               + torch.arange(tile, device=device)).clamp(max=length - 1)
    starts = window_starts(length, kernel_size, device)[queries][..., None]
    offset = keys[:, None, :] - starts
    inside = (offset >= 0) & (offset < kernel_size)
    rel = bias_index(keys[:, None, :], queries[..., None], starts, kernel_size)
    return keys, torch.where(inside, rel, torch.full_like(rel, -1))


@functools.lru_cache(maxsize=16)
def _tile_plan(h: int, w: int, kernel_size: int, tile: int, device: torch.device,
               dtype: torch.dtype):
    """Halo gather index ``(nTiles * Lh * Lw,)`` into the flattened map, per-axis bias
    indices (nTh, tile, Lh), (nTw, tile, Lw) (-1 outside the window) and per-axis additive
    masks of the same shapes (0 inside the window, -inf outside). All small (O(HW)); cached."""
    keys_h, rel_h = _axis_tiles(h, kernel_size, tile, device)
    keys_w, rel_w = _axis_tiles(w, kernel_size, tile, device)
    gather = (keys_h[:, None, :, None] * w + keys_w[None, :, None, :]).reshape(-1)
    masks = [torch.zeros(rel.shape, dtype=dtype, device=device).masked_fill_(
        rel < 0, float('-inf')) for rel in (rel_h, rel_w)]
    return gather, rel_h, rel_w, masks[0], masks[1]


def neighborhood_attention_2d_tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    kernel_size: int, rpb: Optional[torch.Tensor] = None,
                                    attn_drop: float = 0.0, scale: float = 1.0,
                                    tile: int = DEFAULT_TILE) -> torch.Tensor:
    """Neighbourhood attention as dense attention of query tiles over their key halos.

    Same result as :func:`neighborhood_attention_2d` (with ``q * scale``), without the
    ``k*k``-fold window copies. Strided views (e.g. slices of a fused qkv projection) are
    gathered without a prior copy.

    Args:
        q, k, v: (B, heads, H, W, hd) with H, W >= kernel_size; q unscaled.
        rpb: optional (heads, 2k-1, 2k-1) relative position bias (then the bias of every
            tile is materialised, ``heads * H * W * (tile + k - 1)^2 / tile^2`` values).
        scale: factor of the logits.
        tile: query tile side.

    Returns:
        (B, heads, H, W, hd), a view of a ``(B, H, W, heads, hd)`` tensor.
    """
    b, n, h, w, d = q.shape
    if min(h, w) < kernel_size:
        raise ValueError(f'neighbourhood attention needs maps of at least the kernel '
                         f'{kernel_size}, got {h}x{w}')
    gather, rel_h, rel_w, mask_h, mask_w = _tile_plan(h, w, kernel_size, tile, q.device,
                                                      q.dtype)
    (nth, _, lh), (ntw, _, lw) = rel_h.shape, rel_w.shape
    n_tiles, halo = nth * ntw, lh * lw
    # (1, nTiles, tile^2, halo): built per call (one broadcast add) rather than cached, as it
    # is ~(tile + k - 1)^2 / tile^2 times the size of a (H, W, head_dim) map.
    mask = (mask_h[:, None, :, None, :, None] + mask_w[None, :, None, :, None, :]).reshape(
        1, n_tiles, tile * tile, halo)
    if rpb is not None:
        rows = rel_h.clamp(min=0)[:, None, :, None, :, None]
        cols = rel_w.clamp(min=0)[None, :, None, :, None, :]
        mask = mask + rpb[:, rows, cols].reshape(n, n_tiles, tile * tile, halo)

    def halos(t: torch.Tensor) -> torch.Tensor:  # (B, n, H, W, d) -> (B, n, nTiles, halo, d)
        t = t.permute(0, 2, 3, 1, 4).reshape(b, h * w, n, d).index_select(1, gather)
        return t.view(b, n_tiles, halo, n, d).permute(0, 3, 1, 2, 4)

    ph, pw = nth * tile - h, ntw * tile - w
    q = F.pad(q, (0, 0, 0, pw, 0, ph)) if ph or pw else q
    q = q.reshape(b, n, nth, tile, ntw, tile, d).permute(0, 1, 2, 4, 3, 5, 6).reshape(
        b, n, n_tiles, tile * tile, d)
    k, v = halos(k), halos(v)
    drop = attn_drop if attn_drop > 0 else 0.0
    out = torch.stack([F.scaled_dot_product_attention(q[i], k[i], v[i], attn_mask=mask,
                                                      dropout_p=drop, scale=scale)
                       for i in range(b)])  # (B, n, nTiles, tile^2, d)
    out = out.view(b, n, nth, ntw, tile, tile, d).permute(0, 2, 4, 3, 5, 1, 6)
    out = out.reshape(b, nth * tile, ntw * tile, n, d)[:, :h, :w]
    return out.permute(0, 3, 1, 2, 4)


@torch.jit.unused
def _pad_to_kernel_traced(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad ``(B, H, W, C)`` at the bottom/right to at least the kernel, by traced amounts.

    During export the sizes are traced tensors: padding by a traced amount (maybe 0) instead
    of branching keeps the graph valid for maps below and above the kernel."""
    h, w = x.shape[1:3]
    pad_h = (kernel_size - torch.as_tensor(h)).clamp(min=0)
    pad_w = (kernel_size - torch.as_tensor(w)).clamp(min=0)
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


class NeighborhoodAttention2D(nn.Module):
    """Neighbourhood attention on ``(B, C, H, W)`` maps (official N block, natten semantics).

    Maps smaller than the kernel are zero-padded at the bottom/right before the qkv projection
    and cropped afterwards, as natten's module does (in an exported graph, at every size).

    Args:
        dim: channels C.
        kernel_size: odd neighbourhood side.
        num_heads: number of heads.
        attn_drop, proj_drop: dropout rates.
        rel_pos_bias: learn natten's ``(heads, 2k-1, 2k-1)`` bias ``rpb`` (the releases always do).
        use_natten: let ``backend='auto'`` pick natten when it is installed.
        backend: ``'auto'`` (natten when allowed and :func:`natten_api` finds a release that
            adds the bias, else ``'tiled'``), ``'natten'`` (:func:`natten_attention`),
            ``'tiled'`` (:func:`neighborhood_attention_2d_tiled`), ``'reference'``
            (:func:`neighborhood_attention_2d`) or ``'gather'``
            (:func:`neighborhood_attention_2d_gather`). During ``torch.onnx.export`` every
            backend runs ``'gather'``, whose graph is valid for every map size.
    """

    def __init__(self, dim: int, kernel_size: int, num_heads: int, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rel_pos_bias: bool = True,
                 qkv_bias: bool = True, use_natten: bool = True, backend: str = 'auto') -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if backend not in BACKENDS:
            raise ValueError(f'unknown neighbourhood attention backend {backend!r}; '
                             f'choose from {BACKENDS}')
        api = natten_api() if backend == 'natten' or (backend == 'auto' and use_natten) \
            else None
        if backend == 'natten' and api is None:
            raise ValueError("backend='natten' needs natten 0.14 to 0.17 (unfused ops with the "
                             'relative-position bias), which is not installed')
        if backend == 'auto':
            backend = 'natten' if api is not None else 'tiled'
        self.backend = backend
        self.natten_api = api if backend == 'natten' else None
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1,
                                                2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter('rpb', None)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def use_natten(self) -> bool:
        return self.backend == 'natten'

    def _attend(self, q, k, v):
        """q, k, v: (B, heads, H, W, hd), q unscaled -> (B, heads, H, W, hd)."""
        drop = self.attn_drop if self.training else 0.0
        if self.backend == 'gather' or onnx_exporting():
            return neighborhood_attention_2d_gather(q * self.scale, k, v, self.kernel_size,
                                                    self.rpb, drop)
        # A trace would freeze the tile plan (built from Python ints) to the traced size, so
        # other traces (FLOP counting) take the reference.
        if self.backend == 'tiled' and not torch.jit.is_tracing():
            return neighborhood_attention_2d_tiled(q, k, v, self.kernel_size, self.rpb, drop,
                                                   scale=self.scale)
        if self.backend == 'natten':
            return natten_attention(q * self.scale, k, v, self.kernel_size, self.rpb, drop,
                                    self.natten_api)
        return neighborhood_attention_2d(q * self.scale, k, v, self.kernel_size, self.rpb,
                                         drop)

    def forward(self, x: torch.Tensor
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(B, C, H, W) -> ((B, C, H, W), None, None)."""
        b, c, h0, w0 = x.shape
        x = x.permute(0, 2, 3, 1)
        if not torch.jit.is_scripting() and onnx_exporting():
            x = _pad_to_kernel_traced(x, self.kernel_size)
        else:
            pad_h = max(0, self.kernel_size - h0)
            pad_w = max(0, self.kernel_size - w0)
            if pad_h or pad_w:
                x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        h, w = x.shape[1:3]
        qkv = self.qkv(x).view(b, h, w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # (B, heads, H, W, hd)
        if torch.jit.is_scripting():  # the backends' Python-side choices do not compile
            out = neighborhood_attention_2d_gather(q * self.scale, k, v, self.kernel_size,
                                                   self.rpb, self.attn_drop if self.training
                                                   else 0.0)
        else:
            out = self._attend(q, k, v)
        out = out.permute(0, 2, 3, 1, 4).reshape(b, h, w, c)[:, :h0, :w0]
        out = self.proj_drop(self.proj(out))
        return out.permute(0, 3, 1, 2), None, None
