"""DAT's deformable attention as a plug-in block for any CNN: ``(B, C, H, W) -> (B, C, H, W)``.

:class:`DAttention` wraps the layer the DAT backbone's D blocks use
(:class:`~dat_det.models.layers.dat.DeformableAttention`) with an optional pre-norm and
residual, and derives what DAT configures per stage from the channel count alone::

    from dat_det.models.layers import DAttention
    block = DAttention(256)                  # 8 heads, 4 offset groups, key stride 2
    y = block(torch.randn(2, 256, 40, 40))   # any size; y.shape == (2, 256, 40, 40)

There is no ``q_size``: the relative-position bias table is sampled at normalised
query-key displacements (bilinear ``grid_sample``), so one table serves every input size; its
resolution (``bias_table_size``) only sets how finely the bias can vary.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn

from .dat import DeformableAttention, LayerNorm2d

# Defaults follow the DAT++ stages, whose channels 64 / 128 / 256 / 512 (at feature strides
# 4 / 8 / 16 / 32 of the image) have 32 channels per head, two heads per offset group,
# key strides 8 / 4 / 2 / 1 (a key grid of 1/32 of the image at every stage), offset
# kernels 9 / 7 / 5 / 3, unbounded offsets and the interpolated relative-position table.
HEAD_CHANNELS = 32
HEADS_PER_GROUP = 2
STRIDE_ONE_CHANNELS = 512
MAX_STRIDE = 8
# DAT++ pre-trains at 224 px, where every stage's key grid is 7 x 7: its bias table spans a
# query map of 7 * stride cells per side.
PRETRAIN_KEY_GRID = 7

POSITION_BIASES = ('table', 'log_cpb', 'dwc', 'none')


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def default_num_heads(channels: int) -> int:
    """About one head per 32 channels: the largest divisor of ``channels`` <= ``channels // 32``
    (at least 1)."""
    return _largest_divisor_at_most(channels, channels // HEAD_CHANNELS)


def default_groups(num_heads: int) -> int:
    """Two heads per offset group: the largest divisor of ``num_heads`` <= ``num_heads // 2``
    (at least 1)."""
    return _largest_divisor_at_most(num_heads, num_heads // HEADS_PER_GROUP)


def default_stride(channels: int) -> int:
    """Key-grid stride: 1 at 512 channels, doubling for each halving of the channels (as the
    DAT++ stages), rounded to a power of two in [1, 8]."""
    exponent = round(math.log2(STRIDE_ONE_CHANNELS / channels))
    return 2 ** min(max(exponent, 0), int(math.log2(MAX_STRIDE)))


def default_ksize(stride: int) -> int:
    """Offset kernel of DAT++ for a key stride: 3, 5, 7, 9 for strides 1, 2, 4, 8."""
    return 2 * round(math.log2(stride)) + 3 if stride > 1 else 3


def resolve_options(channels: int, num_heads: Optional[int] = None,
                    groups: Optional[int] = None, stride: Optional[int] = None,
                    ksize: Optional[int] = None, bias_table_size: Optional[int] = None
                    ) -> Dict[str, int]:
    """The options left as None, derived from ``channels`` (see the ``default_*`` functions);
    ``bias_table_size`` defaults to ``7 * stride``."""
    if channels < 1:
        raise ValueError(f'DAttention needs a positive channel count, got {channels}')
    num_heads = default_num_heads(channels) if num_heads is None else num_heads
    groups = default_groups(num_heads) if groups is None else groups
    stride = default_stride(channels) if stride is None else stride
    ksize = default_ksize(stride) if ksize is None else ksize
    if bias_table_size is None:
        bias_table_size = PRETRAIN_KEY_GRID * stride
    return dict(num_heads=num_heads, groups=groups, stride=stride, ksize=ksize,
                bias_table_size=bias_table_size)


class DAttention(nn.Module):
    """``x + DeformableAttention(LayerNorm(x))``: DAT's deformable attention as a drop-in block.

    Every query position of the ``(B, C, H, W)`` input attends to keys sampled at learned
    offsets from a grid of ``~(H / stride, W / stride)`` points (see
    :class:`~dat_det.models.layers.dat.DeformableAttention`, the layer of the DAT backbone,
    held as ``self.attn``; its ``sampling_probe`` shows the deformed key positions).

    Args:
        in_channels: channels C (the name mmcv's ``build_plugin_layer`` passes).
        num_heads, groups, stride, ksize: attention heads, offset groups, key-grid stride and
            offset kernel; None derives them from C as DAT++ does per stage
            (:func:`resolve_options`): 32 channels per head, two heads per group, stride 1 at
            512 channels doubling for each halving (at most 8), kernel ``2 log2(stride) + 3``.
        offset_range_factor: -1 (DAT++): unbounded offsets, key positions clamped to the map;
            > 0: offsets bounded to ``factor`` key cells.
        position_bias: 'table' (DAT++: a learned table per head sampled at the normalised
            query-key displacement), 'log_cpb' (an MLP of log-spaced displacements), 'dwc' (a
            depth-wise 3x3 conv of the queries added to the output) or 'none'.
        bias_table_size: the table covers a query map of this many cells per side
            (``(2n - 1)^2`` entries per head); None: ``7 * stride``.
        pre_norm: LayerNorm over the channels before the attention.
        residual: add the input to the attention output.
        zero_init: zero the output projection, so that the block starts as the identity
            (needs ``residual``): inserted into a trained network it leaves the outputs
            unchanged until training moves it.
        attn_drop, proj_drop: dropout of the attention weights and of the output.
        formulation: 'v2' (DAT++) or 'v1' (DAT) grid conventions.
    """

    def __init__(self, in_channels: int, num_heads: Optional[int] = None,
                 groups: Optional[int] = None, stride: Optional[int] = None,
                 ksize: Optional[int] = None, offset_range_factor: float = -1.0,
                 position_bias: str = 'table', bias_table_size: Optional[int] = None,
                 pre_norm: bool = True, residual: bool = True, zero_init: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 formulation: str = 'v2') -> None:
        super().__init__()
        if position_bias not in POSITION_BIASES:
            raise ValueError(f'unknown position_bias {position_bias!r}; choose from '
                             f'{POSITION_BIASES}')
        if zero_init and not residual:
            raise ValueError('zero_init=True needs residual=True (a zeroed block without the '
                             'residual outputs zeros)')
        options = resolve_options(in_channels, num_heads, groups, stride, ksize,
                                  bias_table_size)
        if options['bias_table_size'] < 1:
            raise ValueError(f"bias_table_size must be >= 1, got {options['bias_table_size']}")
        self.in_channels = in_channels
        self.residual = residual
        self.zero_init = zero_init
        self.position_bias = position_bias
        self.norm = LayerNorm2d(in_channels) if pre_norm else nn.Identity()
        table = options['bias_table_size']
        self.attn = DeformableAttention(
            in_channels, options['num_heads'], options['groups'], (table, table),
            stride=options['stride'], offset_range_factor=offset_range_factor,
            use_pe=position_bias != 'none', dwc_pe=position_bias == 'dwc',
            log_cpb=position_bias == 'log_cpb', ksize=options['ksize'], attn_drop=attn_drop,
            proj_drop=proj_drop, formulation=formulation)
        if zero_init:
            self._zero_output()

    def _zero_output(self) -> None:
        nn.init.zeros_(self.attn.proj_out.weight)
        nn.init.zeros_(self.attn.proj_out.bias)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The initialisation of construction again (after a parent's initialiser overwrote
        it): PyTorch's defaults, the bias table ~ N(0, 0.01) truncated, and the zeroed output
        projection with ``zero_init``."""
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        if isinstance(self.attn.rpe_table, nn.Parameter):
            nn.init.trunc_normal_(self.attn.rpe_table, std=0.01)
        if self.zero_init:
            self._zero_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'DAttention({self.in_channels}) takes (B, {self.in_channels}, H, '
                             f'W) maps, got {tuple(x.shape)}')
        out = self.attn(self.norm(x))[0]
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        a = self.attn
        return (f'in_channels={self.in_channels}, num_heads={a.num_heads}, groups={a.n_groups}, '
                f'stride={a.stride}, ksize={a.ksize}, position_bias={self.position_bias!r}, '
                f'residual={self.residual}, zero_init={self.zero_init}')
