"""Stages and whole DAT / DAT++ models of the reference, official module names throughout.

A block is ``x = x + dwconv3x3(x)`` (LPU, DAT++ option), then
``x = x + ls1 * attn(ln1(x))`` and ``x = x + ls2 * mlp(ln2(x))`` (layer scales optional). A
stage projects its input with a 1x1 conv when the channel count changes; stages are joined by a
down-sampling conv and a channel LayerNorm. Two layouts of the parameters:

* ``'classification'`` (the DAT and DAT++ releases): ``cls_norm`` and ``cls_head`` after the
  last stage, the S blocks' ``attn_mask`` buffers, layer scales under ``weight``;
* ``'detection'`` (DAT-Detection): a channel LayerNorm ``norms.i`` on each output stage, no
  classifier, no ``attn_mask``, layer scales under ``gamma``.
"""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention import (
    DeformableAttentionReference,
    NeighborhoodAttentionReference,
    WindowAttentionReference,
)
from .details import DETAILS, Details
from .holders import ChannelNormWeights, ConvWeights, Empty, LayerScaleWeights, LinearWeights
from .primitives import (
    channel_layer_norm,
    conv2d,
    depthwise_conv2d,
    gelu,
    pad_bottom_right_to,
    pointwise,
)

LAYOUTS = ('classification', 'detection')


def layer_norm(x: torch.Tensor, holder: ChannelNormWeights) -> torch.Tensor:
    return channel_layer_norm(x, holder.norm.weight, holder.norm.bias, holder.norm.eps)


class MLPReference(nn.Module):
    """The feed-forward part of a block on ``(B, C, H, W)``.

    ``dwc=False``: ``linear2(gelu(linear1(x)))`` per position (keys ``chunk.linear1/2``).
    ``dwc=True``: 1x1 conv, depth-wise 3x3 conv ``dwc``, GELU, 1x1 conv, combined by
    ``details.dwc_mlp``; the keys follow ``release``: ``linear1.0`` (DAT++) or ``linear1``
    (v1).
    """

    def __init__(self, dim: int, expansion: int, dwc: bool, release: str,
                 details: Details) -> None:
        super().__init__()
        hidden = dim * expansion
        self.dwc_form = details.dwc_mlp if dwc else None
        if not dwc:
            self.chunk = nn.Module()
            self.chunk.linear1 = LinearWeights(hidden, dim)
            self.chunk.linear2 = LinearWeights(dim, hidden)
            return
        if release == 'v1':
            self.linear1 = ConvWeights(hidden, dim, 1)
            self.linear2 = ConvWeights(dim, hidden, 1)
        else:
            self.linear1 = nn.ModuleList([ConvWeights(hidden, dim, 1)])
            self.linear2 = nn.ModuleList([ConvWeights(dim, hidden, 1)])
        self.dwc = ConvWeights(hidden, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dwc_form is None:
            first, second = self.chunk.linear1, self.chunk.linear2
            return pointwise(gelu(pointwise(x, first.weight, first.bias)), second.weight,
                             second.bias)
        first, second = (self.linear1, self.linear2) if isinstance(self.linear1, ConvWeights) \
            else (self.linear1[0], self.linear2[0])
        hidden = pointwise(x, first.weight, first.bias)
        conv = depthwise_conv2d(hidden, self.dwc.weight, self.dwc.bias, 1, 1)
        hidden = gelu(conv) if self.dwc_form == 'replace' else gelu(hidden + conv)
        return pointwise(hidden, second.weight, second.bias)


class StageReference(nn.Module):
    """One stage: arguments as dat_det's ``TransformerStage`` (official option names)."""

    def __init__(self, fmap_size: Tuple[int, int], dim_in: int, dim: int, depth: int,
                 stage_spec: Sequence[str], num_heads: int, window_size: int = 7,
                 groups: int = 1, stride: int = 1, offset_range_factor: float = -1,
                 use_pe: bool = True, dwc_pe: bool = False, no_off: bool = False,
                 fixed_pe: bool = False, ksize: int = 3, log_cpb: bool = False,
                 nat_ksize: int = 7, expansion: int = 4, use_dwc_mlp: bool = False,
                 layer_scale_value: float = -1, use_lpu: bool = False, release: str = 'v2',
                 layout: str = 'classification', details: Optional[Details] = None) -> None:
        super().__init__()
        details = details or DETAILS[release]
        self.details = details
        self.stage_spec = list(stage_spec)
        self.use_lpu = use_lpu
        if dim_in != dim:
            self.proj = ConvWeights(dim, dim_in, 1)
        self.layer_norms = nn.ModuleList(ChannelNormWeights(dim) for _ in range(2 * depth))
        self.mlps = nn.ModuleList(MLPReference(dim, expansion, use_dwc_mlp, release, details)
                                  for _ in range(depth))
        scale_name = 'gamma' if layout == 'detection' else 'weight'
        self.layer_scales = nn.ModuleList(
            LayerScaleWeights(dim, layer_scale_value, scale_name) if layer_scale_value > 0
            else Empty() for _ in range(2 * depth))
        self.local_perception_units = nn.ModuleList(
            ConvWeights(dim, 1, 3) if use_lpu else Empty() for _ in range(depth))
        self.attns = nn.ModuleList()
        for spec in self.stage_spec:
            if spec in ('L', 'S'):
                shift = -(-window_size // 2) if spec == 'S' else 0
                mask_size = fmap_size if layout == 'classification' else None
                self.attns.append(WindowAttentionReference(dim, num_heads, window_size, shift,
                                                           mask_size, details))
            elif spec == 'N':
                self.attns.append(NeighborhoodAttentionReference(dim, nat_ksize, num_heads,
                                                                 details))
            elif spec == 'D':
                self.attns.append(DeformableAttentionReference(
                    dim, num_heads, groups, fmap_size, stride, offset_range_factor, use_pe,
                    dwc_pe, fixed_pe, log_cpb, no_off, ksize, details))
            else:
                raise ValueError(f'unknown block type {spec!r}')

    def _scale(self, index: int, x: torch.Tensor) -> torch.Tensor:
        holder = self.layer_scales[index]
        if isinstance(holder, Empty) or not self.details.layer_scale:
            return x
        return x * holder.scale.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List]:
        """``(B, C_in, H, W)`` -> (``(B, C, H, W)``, per block (pos, ref) or None)."""
        if hasattr(self, 'proj'):
            x = pointwise(x, self.proj.weight, self.proj.bias)
        positions = []
        for d, attn in enumerate(self.attns):
            if self.use_lpu and self.details.lpu:
                lpu = self.local_perception_units[d]
                x = x + depthwise_conv2d(x, lpu.weight, lpu.bias, 1, 1)
            y, pos, ref = attn(layer_norm(x, self.layer_norms[2 * d]))
            x = x + self._scale(2 * d, y)
            x = x + self._scale(2 * d + 1, self.mlps[d](layer_norm(x, self.layer_norms[2 * d + 1])))
            positions.append(None if pos is None else (pos, ref))
        return x, positions


class DATReference(nn.Module):
    """A whole DAT / DAT++ model from an architecture dict (the official field names: ``dims``,
    ``depths``, ``stage_spec``, ``heads``, ... and ``formulation`` 'v1' or 'v2').

    Args:
        settings: architecture fields, as ``dat_det.models.layers.dat.resolve_arch`` gives.
        img_size: pre-training image side (sizes the deformable position tables and the
            ``attn_mask`` buffers).
        layout: 'classification' (``num_classes`` logits) or 'detection' (``out_indices``).
        details: formulation switches; by default those of ``settings['formulation']``.
    """

    def __init__(self, settings: Dict[str, Any], img_size: int = 224, patch_size: int = 4,
                 expansion: int = 4, in_channels: int = 3, num_classes: int = 1000,
                 layout: str = 'classification', out_indices: Sequence[int] = (0, 1, 2, 3),
                 details: Optional[Details] = None) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
        s = copy.deepcopy(dict(settings))
        release = s.get('formulation', 'v2')
        self.details = details or DETAILS[release]
        self.layout, self.patch_size = layout, patch_size
        self.conv_patches = s['use_conv_patches']
        dims, dim_stem = s['dims'], s['dim_stem']
        if not self.conv_patches:
            self.patch_proj = nn.ModuleList([ConvWeights(dim_stem, in_channels, patch_size),
                                             ChannelNormWeights(dim_stem)])
        elif self.details.conv_stem == 'one_7x7':
            self.patch_proj = nn.ModuleList([ConvWeights(dim_stem, in_channels, 7),
                                             ChannelNormWeights(dim_stem)])
        else:
            self.patch_proj = nn.ModuleList([
                ConvWeights(dim_stem // 2, in_channels, 3), ChannelNormWeights(dim_stem // 2),
                Empty(), ConvWeights(dim_stem, dim_stem // 2, 3), ChannelNormWeights(dim_stem)])
        fmap = img_size // patch_size
        self.stages = nn.ModuleList()
        for i in range(4):
            self.stages.append(StageReference(
                (fmap, fmap), dim_stem if i == 0 else dims[i - 1] * 2, dims[i], s['depths'][i],
                s['stage_spec'][i], s['heads'][i], s['window_sizes'][i], s['groups'][i],
                s['strides'][i], s['offset_range_factor'][i], s['use_pes'][i], s['dwc_pes'][i],
                s['no_offs'][i], s['fixed_pes'][i], s['ksizes'][i], s['log_cpb'][i],
                s['nat_ksizes'][i], expansion, s['use_dwc_mlps'][i],
                s['layer_scale_values'][i], s['use_lpus'][i], release, layout, self.details))
            fmap //= 2
        kernel = 3 if self.conv_patches else 2
        self.down_projs = nn.ModuleList(
            nn.ModuleList([ConvWeights(dims[i + 1], dims[i], kernel, bias=False),
                           ChannelNormWeights(dims[i + 1])]) for i in range(3))
        if layout == 'classification':
            self.cls_norm = ChannelNormWeights(dims[-1])
            self.cls_head = LinearWeights(num_classes, dims[-1])
        else:
            self.out_indices = tuple(out_indices)
            self.norms = nn.ModuleList(ChannelNormWeights(dims[i]) if i in self.out_indices
                                       else Empty() for i in range(4))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(B, 3, H, W)`` -> first-stage input."""
        p = self.patch_proj
        if not self.conv_patches:  # non-overlapping patches; odd sizes padded at bottom/right
            x = pad_bottom_right_to(x, self.patch_size, self.patch_size)
            return layer_norm(conv2d(x, p[0].weight, p[0].bias, self.patch_size, 0), p[1])
        if self.details.conv_stem == 'one_7x7':
            pad = 3 if self.details.stem_padding else 0
            return layer_norm(conv2d(x, p[0].weight, p[0].bias, self.patch_size, pad), p[1])
        half, pad = self.patch_size // 2, 1 if self.details.stem_padding else 0
        x = layer_norm(conv2d(x, p[0].weight, p[0].bias, half, pad), p[1])
        if self.details.stem_activation:
            x = gelu(x)
        return layer_norm(conv2d(x, p[3].weight, p[3].bias, half, pad), p[4])

    def down(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` output -> stage ``i + 1`` input (stride 2)."""
        conv, norm = self.down_projs[i]
        if self.conv_patches:
            return layer_norm(conv2d(x, conv.weight, None, 2, 1), norm)
        return layer_norm(conv2d(pad_bottom_right_to(x, 2, 2), conv.weight, None, 2, 0), norm)

    def stage_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs (before any output norm)."""
        x = self.stem(x)
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)[0]
            maps.append(x)
            if i < 3:
                x = self.down(i, x)
        return maps

    def forward(self, x: torch.Tensor):
        """Logits ``(B, num_classes)`` ('classification') or the normalised maps of
        ``out_indices`` ('detection')."""
        maps = self.stage_maps(x)
        if self.layout == 'detection':
            return tuple(layer_norm(maps[i], self.norms[i]) for i in self.out_indices)
        pooled = layer_norm(maps[-1], self.cls_norm).mean(dim=(2, 3))
        return pooled @ self.cls_head.weight.t() + self.cls_head.bias


def official_checkpoint(model: DATReference) -> Dict[str, Any]:
    """The model's weights as the releases store them: ``{'model': {'module.' + key}}``
    (classification) or ``{'state_dict': {'backbone.' + key}}`` (DAT-Detection)."""
    if model.layout == 'classification':
        return {'model': {'module.' + k: v for k, v in model.state_dict().items()},
                'epoch': 300}
    return {'state_dict': {'backbone.' + k: v for k, v in model.state_dict().items()},
            'meta': {}}
