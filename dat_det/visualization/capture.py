"""Where deformable attention samples: recorded from a forward pass, in normalized coordinates.

- Deformable DETR: every :class:`MultiScaleDeformableAttention` call passes its sampling
  locations and attention weights to the op; the op is wrapped while recording, so the values
  are exactly those the model used.
- DAT: :meth:`DAT.forward_with_positions` returns the reference grid and the deformed key
  positions of every deformable block.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List

import torch
from torch import Tensor, nn

from dat_det.models.layers.deformable_detr import MultiScaleDeformableAttention
from dat_det.models.layers.deformable_detr import msda as msda_module


@dataclass
class MSDASamples:
    """One attention call: ``locations (B, Lq, heads, levels, points, 2)`` normalized (x, y)
    over each level's (padded) map, ``weights (B, Lq, heads, levels, points)``,
    ``spatial_shapes (levels, 2)`` (H, W)."""

    locations: Tensor
    weights: Tensor
    spatial_shapes: Tensor


@contextmanager
def record_msda(model: nn.Module) -> Iterator[Dict[str, List[MSDASamples]]]:
    """Record the samples of every deformable attention of ``model`` during the context.

    Yields a dict from module name (e.g. ``decoder.layers.1.cross_attn``) to its calls.
    """
    records: Dict[str, List[MSDASamples]] = {}
    current: List[str] = []
    names = {m: n for n, m in model.named_modules() if isinstance(m, MultiScaleDeformableAttention)}
    handles = [m.register_forward_pre_hook(lambda mod, args: current.append(names[mod]))
               for m in names]
    original = msda_module.multi_scale_deformable_attn

    def recording_op(value, spatial_shapes, level_start_index, sampling_locations,
                     attention_weights, backend=None):
        if current:
            records.setdefault(current.pop(), []).append(MSDASamples(
                sampling_locations.detach(), attention_weights.detach(), spatial_shapes))
        return original(value, spatial_shapes, level_start_index, sampling_locations,
                        attention_weights, backend=backend)

    msda_module.multi_scale_deformable_attn = recording_op
    try:
        yield records
    finally:
        msda_module.multi_scale_deformable_attn = original
        for handle in handles:
            handle.remove()


@dataclass
class DATPositions:
    """Key positions of one DAT deformable block, normalized (y, x) in [-1, 1] (corner-aligned)
    over the stage's map of ``map_size`` (H, W): ``pos``, ``ref`` ``(groups, Hk, Wk, 2)``."""

    stage: int
    block: int
    pos: Tensor
    ref: Tensor
    map_size: tuple


@torch.no_grad()
def dat_positions(backbone: nn.Module, inputs: Tensor) -> List[DATPositions]:
    """Positions of every deformable block of a DAT ``backbone`` for the first image."""
    if not hasattr(backbone, 'forward_with_positions'):
        raise ValueError(f'{type(backbone).__name__} has no deformable key positions '
                         '(needs a DAT backbone)')
    sizes = {}
    hooks = [stage.register_forward_hook(
        lambda mod, args, out, i=i: sizes.__setitem__(i, tuple(out[0].shape[-2:])))
        for i, stage in enumerate(backbone.stages)]
    try:
        _, positions = backbone.forward_with_positions(inputs[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return [DATPositions(p['stage'], p['block'], p['pos'][0], p['ref'][0], sizes[p['stage']])
            for p in positions]
