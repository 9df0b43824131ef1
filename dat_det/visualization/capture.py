"""Where deformable attention samples: recorded from a forward pass, in normalized coordinates.

Both attention modules declare a ``sampling_probe`` (:class:`dat_det.models.layers.probe.Probe`),
an identity submodule called on the tensors that say where they sample; forward hooks on it
record exactly what the module used:

- Deformable DETR: :class:`MSDeformAttn` passes its sampling locations and
  attention weights (:func:`record_msda`).
- DAT: :class:`DeformableAttention` passes its deformed key positions and reference grid
  (:func:`dat_positions`; for the plug-in blocks :class:`DAttention` of a CNN detector,
  :func:`dattention_positions`).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List

import torch
from torch import Tensor, nn

from dat_det.models.layers import DAttention
from dat_det.models.layers.dat import DeformableAttention
from dat_det.models.layers.deformable_detr import MSDeformAttn
from dat_det.ops import SpatialShapes, level_layout


@dataclass
class MSDASamples:
    """One attention call: ``locations (B, Lq, heads, levels, points, 2)`` normalized (x, y)
    over each level's (padded) map, ``weights (B, Lq, heads, levels, points)``,
    ``spatial_shapes (levels, 2)`` (H, W)."""

    locations: Tensor
    weights: Tensor
    spatial_shapes: Tensor


def _shapes_tensor(spatial_shapes: SpatialShapes) -> Tensor:
    if isinstance(spatial_shapes, Tensor):
        return spatial_shapes
    return level_layout(spatial_shapes)[0]


@contextmanager
def record_msda(model: nn.Module) -> Iterator[Dict[str, List[MSDASamples]]]:
    """Record the samples of every deformable attention of ``model`` during the context.

    Yields a dict from module name (e.g. ``decoder.layers.1.cross_attn``) to its calls.
    """
    records: Dict[str, List[MSDASamples]] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, MSDeformAttn):
            continue
        shapes: List[SpatialShapes] = []

        def remember_shapes(mod, args, kwargs, shapes=shapes):
            shapes[:] = [kwargs['spatial_shapes'] if 'spatial_shapes' in kwargs else args[3]]

        def record(probe, args, out, name=name, shapes=shapes):
            locations, weights = out
            records.setdefault(name, []).append(MSDASamples(
                locations.detach(), weights.detach(), _shapes_tensor(shapes[0])))

        handles.append(module.register_forward_pre_hook(remember_shapes, with_kwargs=True))
        handles.append(module.sampling_probe.register_forward_hook(record))
    try:
        yield records
    finally:
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
    """Positions of every deformable block of a DAT ``backbone`` for the first image, recorded
    by hooks on the blocks' ``sampling_probe`` (stage and block from the module names
    ``stages.<i>.attns.<d>``)."""
    blocks = [(name, m) for name, m in backbone.named_modules()
              if isinstance(m, DeformableAttention)]
    if not blocks or not hasattr(backbone, 'stages'):
        raise ValueError(f'{type(backbone).__name__} has no deformable key positions '
                         '(needs a DAT backbone)')
    sizes, found = {}, []

    def record(probe, args, out, name):
        pos, ref = out  # (B * groups, Hk, Wk, 2) with B = 1 here, (Hk, Wk, 2)
        parts = name.split('.')
        stage, block = int(parts[parts.index('stages') + 1]), int(parts[-1])
        found.append((stage, block, pos, ref.expand_as(pos)))

    hooks = [m.sampling_probe.register_forward_hook(
        lambda probe, args, out, name=name: record(probe, args, out, name))
        for name, m in blocks]
    hooks += [stage.register_forward_hook(
        lambda mod, args, out, i=i: sizes.__setitem__(i, tuple(out[0].shape[-2:])))
        for i, stage in enumerate(backbone.stages)]
    try:
        backbone(inputs[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return [DATPositions(stage, block, pos, ref, sizes[stage])
            for stage, block, pos, ref in found]


@dataclass
class DAttentionPositions:
    """Key positions of one plug-in :class:`DAttention` block (its first call), normalized
    (y, x) in [-1, 1] (corner-aligned) over the block's input map of ``map_size`` (H, W):
    ``pos``, ``ref`` ``(groups, Hk, Wk, 2)``. ``name`` is the block's module name."""

    name: str
    pos: Tensor
    ref: Tensor
    map_size: tuple


@torch.no_grad()
def dattention_positions(model: nn.Module, inputs: Tensor, samples: list
                         ) -> List[DAttentionPositions]:
    """Positions of every :class:`DAttention` block of a detector for the first image,
    recorded by hooks on the blocks' ``attn.sampling_probe`` during one ``predict`` call (so
    blocks anywhere, head included, are reached), in the order the blocks ran."""
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, DAttention)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no DAttention block')
    sizes: Dict[str, tuple] = {}
    found: Dict[str, DAttentionPositions] = {}

    def remember_size(name, args):
        sizes.setdefault(name, tuple(args[0].shape[-2:]))

    def record(name, out):
        pos, ref = out  # (B * groups, Hk, Wk, 2) with B = 1 here, (Hk, Wk, 2)
        if name not in found:
            found[name] = DAttentionPositions(name, pos, ref.expand_as(pos), sizes[name])

    hooks = []
    for name, block in blocks:
        hooks.append(block.register_forward_pre_hook(
            lambda m, args, name=name: remember_size(name, args)))
        hooks.append(block.attn.sampling_probe.register_forward_hook(
            lambda probe, args, out, name=name: record(name, out)))
    try:
        model(inputs[:1], list(samples[:1]), mode='predict')
    finally:
        for hook in hooks:
            hook.remove()
    return list(found.values())
