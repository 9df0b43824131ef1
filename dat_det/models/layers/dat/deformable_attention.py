"""Deformable multi-head attention of DAT / DAT++ (official ``DAttentionBaseline``)."""
from typing import Final, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..probe import Probe
from .norm import LayerNorm2d

# How a formulation places key reference points, query positions and offset ranges on the
# normalised [-1, 1] grid (align_corners=True convention of ``grid_sample``):
#   'v1' (DAT, CVPR 2022 release): cell centres ``(i + 0.5) / n * 2 - 1`` for keys *and*
#        queries; offsets ``tanh * factor / n`` when factor > 0, raw when factor == 0, and
#        ``tanh(reference + offset)`` when factor < 0.
#   'v2' (DAT++ release): key centres ``(i + 0.5) / (n - 1) * 2 - 1``, query corners
#        ``i / (n - 1) * 2 - 1``; offsets ``tanh * factor / (n - 1)`` when factor >= 0, and
#        positions clamped to [-1, 1] when factor < 0.
# Both are finite on a one-cell axis: 'v1' never divides by zero, 'v2' puts the cell at 0.
FORMULATIONS = ('v1', 'v2')


def check_formulation(formulation: str) -> str:
    """The formulation name, or a one-line error naming the valid ones."""
    if formulation not in FORMULATIONS:
        raise ValueError(f'unknown DAT formulation {formulation!r}; choose from {FORMULATIONS}')
    return formulation


def key_reference_points(h: int, w: int, dtype: torch.dtype, device: torch.device,
                         formulation: str = 'v2') -> torch.Tensor:
    """Reference point of each key cell, ``(h, w, 2)`` as (y, x).

    'v2' maps cell centre ``i + 0.5`` to ``(i + 0.5) / (n - 1) * 2 - 1`` (a one-cell axis has
    no such scale; its single reference is put at the centre, 0); 'v1' to
    ``(i + 0.5) / n * 2 - 1``.
    """
    axes = [_centres(n, dtype, device, formulation) for n in (h, w)]
    return torch.stack(torch.meshgrid(axes, indexing='ij'), -1)


def query_grid(h: int, w: int, dtype: torch.dtype, device: torch.device,
               formulation: str = 'v2') -> torch.Tensor:
    """Query positions, ``(h, w, 2)`` as (y, x).

    'v2': ``i / (n - 1) * 2 - 1`` (0 for a single row/column); 'v1': the cell centres of
    :func:`key_reference_points` (the v1 release reuses its reference-point grid).
    """
    if formulation == 'v1':
        return key_reference_points(h, w, dtype, device, formulation)
    axes = [_corners(n, dtype, device) for n in (h, w)]
    return torch.stack(torch.meshgrid(axes, indexing='ij'), -1)


def _centres(n: int, dtype: torch.dtype, device: torch.device, formulation: str
             ) -> torch.Tensor:
    centres = torch.linspace(0.5, n - 0.5, n, dtype=dtype, device=device)
    if formulation == 'v1':
        return centres / n * 2.0 - 1.0
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return centres / (n - 1.0) * 2.0 - 1.0


def _corners(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.arange(n, dtype=dtype, device=device) / (n - 1.0) * 2.0 - 1.0


def offset_scale(n: int, formulation: str = 'v2') -> float:
    """Offset range of a key axis with n cells: ``1 / n`` ('v1'), ``1 / (n - 1)`` ('v2', 1 when
    n == 1)."""
    if formulation == 'v1':
        return 1.0 / n
    return 1.0 / (n - 1.0) if n > 1 else 1.0


def deformed_positions(offset: torch.Tensor, offset_range_factor: float, formulation: str
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key sampling positions from the raw offsets of the offset network.

    Args:
        offset: (B*g, 2, Hk, Wk) raw (y, x) offsets.
        offset_range_factor: see :class:`DeformableAttention`.
        formulation: 'v1' or 'v2' (see ``FORMULATIONS``).

    Returns:
        pos: (B*g, Hk, Wk, 2) normalised (y, x) positions; reference: (Hk, Wk, 2).
    """
    hk, wk = offset.shape[-2:]
    reference = key_reference_points(hk, wk, offset.dtype, offset.device, formulation)
    bounded = offset_range_factor > 0 or (offset_range_factor == 0 and formulation == 'v2')
    if bounded:
        # per axis, without building a tensor from the scales: under export the key grid
        # sizes are traced, and a tensor made of them would keep the traced size's range
        offset = offset.permute(0, 2, 3, 1).tanh() * offset_range_factor
        offset = torch.stack((offset[..., 0] * offset_scale(hk, formulation),
                              offset[..., 1] * offset_scale(wk, formulation)), -1)
    else:
        offset = offset.permute(0, 2, 3, 1)
    pos = offset + reference
    if offset_range_factor < 0:
        pos = pos.tanh() if formulation == 'v1' else pos.clamp(-1.0, 1.0)
    return pos, reference


class DeformableAttention(nn.Module):
    """Deformable attention: keys/values are bilinearly sampled at learned offsets from a grid.

    Queries come from every position of the ``(B, C, H, W)`` input. A light conv network on the
    queries of each group predicts offsets on a key grid of ``(Hk, Wk) ~ (H, W) / stride``;
    keys and values are projected from the input sampled there, then attended to by all
    queries, optionally with a relative position bias. Parameter names follow the official
    ``DAttentionBaseline``; the attention itself runs through
    ``F.scaled_dot_product_attention`` with the bias (if any) as an additive mask; without
    autograd the bias is built and used for ``bias_chunk_elements`` values at a time
    (chunks of queries), never for all ``(B, heads, HW, Ns)`` at once.

    Args:
        dim: channels C.
        num_heads: attention heads; head channels are ``dim // num_heads``.
        groups: offset groups (each shares one set of offsets over ``num_heads // groups``
            heads, ``heads_per_group``).
        q_size: (H, W) of the query map at pre-training; sizes the ``rpe_table``.
        stride: key grid stride of the offset network.
        offset_range_factor: > 0: offsets are ``tanh`` scaled by ``factor / (Hk - 1)``
            (``factor / Hk`` in 'v1'); < 0: raw offsets, positions clamped to [-1, 1]
            (squashed by ``tanh`` in 'v1'); see :func:`deformed_positions`.
        use_pe: add a relative position bias (or, with ``dwc_pe``, a conv positional term).
        dwc_pe: positional term is a depth-wise 3x3 conv of the queries.
        fixed_pe: a learned bias per (query, key) pair, only valid at ``q_size``.
        log_cpb: continuous bias from an MLP of log-spaced displacements (Swin-V2 style).
        no_off: no offsets: keys are average-pooled on the regular grid.
        ksize: kernel of the depth-wise offset conv.
        attn_drop, proj_drop: dropout rates.
        formulation: 'v2' (DAT++ release) or 'v1' (DAT v1 release): grid normalisation and
            offset range (see ``FORMULATIONS``), and the offset conv is always padded by
            ``ksize // 2`` in 'v1' (unpadded when ``ksize == stride`` in 'v2').
    """

    # Bias values built at a time without autograd (16 MiB in float32): small enough to stay
    # in cache-friendly chunks, large enough that the per-chunk overhead does not show.
    bias_chunk_elements = 1 << 22

    # TorchScript compiles only the branches of the options a module has
    use_pe: Final[bool]
    dwc_pe: Final[bool]
    fixed_pe: Final[bool]
    log_cpb: Final[bool]
    no_off: Final[bool]

    def __init__(self, dim: int, num_heads: int, groups: int, q_size: Tuple[int, int],
                 stride: int = 1, offset_range_factor: float = -1, use_pe: bool = True,
                 dwc_pe: bool = False, fixed_pe: bool = False, log_cpb: bool = False,
                 no_off: bool = False, ksize: int = 3, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, formulation: str = 'v2') -> None:
        super().__init__()
        self.formulation = check_formulation(formulation)
        self.sampling_probe = Probe()  # identity; see forward
        if no_off and formulation == 'v1':
            raise ValueError("no_off is not part of the 'v1' formulation (the v1 release "
                             "fails on it); use formulation='v2'")
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if groups < 1 or num_heads % groups != 0:
            raise ValueError(f'num_heads {num_heads} must be a positive multiple of groups '
                             f'{groups}')
        if stride < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.n_groups = groups
        self.n_group_channels = dim // groups
        self.heads_per_group = num_heads // groups
        self.q_h, self.q_w = q_size
        self.kv_h, self.kv_w = self.q_h // stride, self.q_w // stride
        self.stride = stride
        self.ksize = ksize
        self.offset_range_factor = float(offset_range_factor)
        self.use_pe, self.dwc_pe, self.fixed_pe = use_pe, dwc_pe, fixed_pe
        self.log_cpb, self.no_off = log_cpb, no_off
        self.attn_drop = attn_drop

        gc = self.n_group_channels
        pad = ksize // 2 if ksize != stride or formulation == 'v1' else 0
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
            table = nn.Parameter(torch.zeros(self.num_heads, self.q_h * self.q_w,
                                             self.kv_h * self.kv_w))
        elif self.log_cpb:
            return nn.Sequential(nn.Linear(2, 32, bias=True), nn.ReLU(inplace=True),
                                 nn.Linear(32, self.heads_per_group, bias=False))
        else:
            table = nn.Parameter(torch.zeros(self.num_heads, self.q_h * 2 - 1, self.q_w * 2 - 1))
        nn.init.trunc_normal_(table, std=0.01)  # torch's; timm's is the same algorithm
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
        if self.no_off:
            offset = torch.zeros_like(offset)
        return deformed_positions(offset, self.offset_range_factor, self.formulation)

    def _sample_keys(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Input sampled at ``pos``: (B*g, Cg, Hk, Wk)."""
        b, c, h, w = x.shape
        hk, wk = pos.shape[1], pos.shape[2]
        if self.no_off:
            sampled = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
            if sampled.shape[-2] != hk or sampled.shape[-1] != wk:
                raise ValueError(
                    f'no_off pools a {h}x{w} map to {sampled.shape[-2]}x{sampled.shape[-1]}, '
                    f'but the key grid is {hk}x{wk}; use a size divisible by the stride')
            return sampled.reshape(b * self.n_groups, self.n_group_channels, hk, wk)
        return F.grid_sample(x.reshape(b * self.n_groups, self.n_group_channels, h, w),
                             pos.flip(-1), mode='bilinear', align_corners=True)

    def position_bias(self, pos: torch.Tensor, h: int, w: int, start: int = 0,
                      stop: Optional[int] = None) -> Optional[torch.Tensor]:
        """Additive attention bias of the queries ``start:stop`` (row-major over the ``h x w``
        query map): ``(B, heads, stop - start, Ns)`` (``(1, ...)`` for ``fixed_pe``), or None
        (no bias / ``dwc_pe``)."""
        if self.rpe_table is None or self.dwc_pe:
            return None
        stop = h * w if stop is None else stop
        bg, hk, wk, _ = pos.shape
        b = bg // self.n_groups
        n_sample = hk * wk
        if self.fixed_pe:
            if h * w != self.rpe_table.shape[1] or n_sample != self.rpe_table.shape[2]:
                raise ValueError(
                    f'fixed_pe was built for {self.q_h}x{self.q_w} queries and '
                    f'{self.kv_h}x{self.kv_w} keys, got {h}x{w} and {hk}x{wk}')
            return self.rpe_table[:, start:stop].unsqueeze(0)
        q_grid = query_grid(h, w, pos.dtype, pos.device, self.formulation).reshape(-1, 2)
        if start != 0 or stop != h * w:
            q_grid = q_grid[start:stop]
        n_query = q_grid.shape[0]
        if self.log_cpb:
            displacement = q_grid.view(1, n_query, 1, 2) - pos.reshape(bg, 1, n_sample, 2)
            displacement = displacement * 4.0
            # / log2(8) = 3 (a literal: TorchScript has no math.log2)
            displacement = torch.sign(displacement) * torch.log2(displacement.abs() + 1.0) / 3.0
            bias = self.rpe_table(displacement)  # (B*g, Q, Ns, hg)
            bias = bias.view(b, self.n_groups, n_query, n_sample, self.heads_per_group)
            return bias.permute(0, 1, 4, 2, 3).reshape(b, self.num_heads, n_query, n_sample)
        t_h, t_w = self.rpe_table.shape[-2], self.rpe_table.shape[-1]
        table = self.rpe_table.view(1, self.n_groups, self.heads_per_group, t_h, t_w)
        table = table.expand(b, -1, -1, -1, -1).reshape(bg, self.heads_per_group, t_h, t_w)
        # Half the (x, y) displacement query - key, the table's grid_sample coordinate, built
        # in one broadcast add of complex numbers x + iy (a pair-wise broadcast of a last dim
        # of 2 would not vectorise). Halving and negating before adding are exact in binary
        # floating point, so this equals ((q - p) / 2) bit for bit; adding (not subtracting)
        # spares the backward pass a negation of the full-size gradient.
        q_half, p_half = q_grid.flip(-1) * 0.5, (pos.flip(-1) * -0.5).reshape(bg, n_sample, 2)
        if torch.jit.is_tracing():  # ONNX has no complex numbers
            grid = q_half.view(1, n_query, 1, 2) + p_half.view(bg, 1, n_sample, 2)
        else:
            grid = torch.view_as_real(torch.view_as_complex(q_half.contiguous()).view(
                1, n_query, 1) + torch.view_as_complex(p_half).view(bg, 1, n_sample))
        bias = F.grid_sample(table, grid, mode='bilinear', align_corners=True)  # (B*g, hg, Q, Ns)
        return bias.view(b, self.num_heads, n_query, n_sample)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                h: int, w: int) -> torch.Tensor:
        """Attention of all queries over the sampled keys with the position bias.

        Args:
            q: (B, heads, HW, hc); k, v: (B, heads, Ns, hc); pos: (B*g, Hk, Wk, 2).

        Returns:
            (B, heads, HW, hc)
        """
        drop = self.attn_drop if self.training else 0.0
        needs_bias = self.rpe_table is not None and not self.dwc_pe
        if not needs_bias:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            # one SDPA node over the full bias: a trace would freeze the chunk loop to the
            # traced size (ONNX export), FLOP counters see the attention as one op, and a
            # compiled module has no Python-side choice of path
            bias = self.position_bias(pos, h, w)
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if bias is None else bias.to(q.dtype), dropout_p=drop,
                scale=self.scale)
        params = self.rpe_table.parameters() if isinstance(self.rpe_table, nn.Module) \
            else [self.rpe_table]
        grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, v, pos, *params))
        if grad:
            # Autograd keeps the bias of every query for the backward pass anyway, so it is
            # built in full, and added to the logits inside the batched GEMM (SDPA would run
            # its unfused path for a mask that needs a gradient, with extra passes).
            b, heads, n_query, hc = q.shape
            n_sample = k.shape[2]
            bias = self.position_bias(pos, h, w).to(q.dtype).expand(b, -1, -1, -1)
            logits = torch.baddbmm(bias.reshape(b * heads, n_query, n_sample),
                                   q.reshape(b * heads, n_query, hc),
                                   k.reshape(b * heads, n_sample, hc).transpose(1, 2),
                                   alpha=self.scale)
            attn = F.dropout(logits.softmax(dim=-1), p=drop, training=drop > 0)
            return torch.bmm(attn, v.reshape(b * heads, n_sample, hc)).view(q.shape)
        # Without autograd, the bias of a chunk of queries is built, used by the fused SDPA
        # kernel and dropped: peak memory O(chunk * Ns) instead of O(HW * Ns).
        n_query, n_sample = h * w, k.shape[2]
        chunk = self.bias_chunk_queries(q.shape[0], n_sample)
        out = torch.empty_like(q)
        for start in range(0, n_query, chunk):
            stop = min(start + chunk, n_query)
            bias = self.position_bias(pos, h, w, start, stop).to(q.dtype)
            out[:, :, start:stop] = F.scaled_dot_product_attention(
                q[:, :, start:stop], k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        return out

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, heads, N, hc), head channels contiguous (the fused SDPA kernels
        need a unit last stride)."""
        return t.reshape(t.shape[0], self.num_heads, self.head_dim, -1).transpose(2, 3) \
            .contiguous()

    def bias_chunk_queries(self, batch: int, n_sample: int) -> int:
        """Queries per chunk of the no-autograd path: ``bias_chunk_elements`` bias values of
        all heads."""
        return max(1, self.bias_chunk_elements // (batch * self.num_heads * n_sample))

    def forward(self, x: torch.Tensor
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(B, C, H, W) -> (out (B, C, H, W), pos (B, g, Hk, Wk, 2), ref (B, g, Hk, Wk, 2))."""
        b, c, h, w = x.shape
        q = self.proj_q(x)
        pos, reference = self.sampling_positions(q)
        if not torch.jit.is_scripting():
            # extension point: hooks on sampling_probe see pos (B*g, Hk, Wk, 2), reference
            pos, reference = self.sampling_probe(pos, reference)
        hk, wk = pos.shape[1:3]
        n_sample = hk * wk
        sampled = self._sample_keys(x, pos).reshape(b, c, 1, n_sample)
        out = self._attend(self.split_heads(q), self.split_heads(self.proj_k(sampled)),
                           self.split_heads(self.proj_v(sampled)), pos, h, w)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        if self.rpe_table is not None and self.dwc_pe:
            out = out + self.rpe_table(q)
        y = self.proj_drop(self.proj_out(out))
        groups_shape = (b, self.n_groups, hk, wk, 2)
        return y, pos.reshape(groups_shape), reference.expand(groups_shape)
