"""Random inputs and a reference for the multi-scale deformable attention tests."""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

# (batch, spatial shapes, heads, channels, points, queries): 1-4 levels, odd sizes, 1x1 levels
SHAPE_CASES: List[Tuple[int, Tuple[Tuple[int, int], ...], int, int, int, int]] = [
    (1, ((13, 19),), 1, 16, 1, 7),
    (2, ((13, 19), (7, 10)), 2, 16, 4, 9),
    (3, ((1, 1),), 3, 32, 2, 5),
    (1, ((8, 8), (4, 4), (2, 2), (1, 1)), 8, 16, 8, 6),
    (2, ((13, 19), (1, 1), (5, 3)), 4, 64, 3, 11),
    (1, ((25, 38), (13, 19), (7, 10), (4, 5)), 8, 32, 4, 13),
    (2, ((3, 17), (17, 3)), 5, 24, 5, 4),
    (3, ((6, 9), (3, 5), (2, 3)), 1, 48, 7, 3),
]

# degenerate layouts: (batch, spatial shapes, heads, channels, points, queries, low, high),
# locations uniform in [low, high]; the last ones sample outside every map only
DEGENERATE_CASES = [
    (1, ((1, 1),), 1, 4, 1, 3, -0.2, 1.2),
    (2, ((1, 1),), 2, 3, 3, 2, -0.2, 1.2),
    (1, ((1, 2),), 1, 2, 2, 4, -0.2, 1.2),
    (1, ((1, 5),), 3, 4, 1, 3, -0.2, 1.2),
    (1, ((2, 1),), 1, 4, 2, 2, -0.2, 1.2),
    (2, ((5, 1),), 1, 1, 4, 3, -0.2, 1.2),
    (1, ((1, 1), (1, 3), (4, 1)), 2, 4, 1, 2, -0.2, 1.2),
    (1, ((3, 4), (1, 1)), 1, 8, 1, 1, -0.2, 1.2),
    (1, ((1, 1),), 1, 4, 2, 3, 1.3, 4.0),
    (2, ((3, 2), (1, 2)), 2, 4, 2, 3, -5.0, -0.6),
]


def degenerate_case_id(case) -> str:
    *layout, low, high = case
    return f'{case_id(layout)}-at{low:g}..{high:g}'


def case_id(case) -> str:
    batch, shapes, heads, channels, points, queries = case
    levels = 'x'.join(f'{h}_{w}' for h, w in shapes)
    return f'b{batch}-l{levels}-h{heads}-c{channels}-p{points}-q{queries}'


def level_tensors(shapes: Sequence[Tuple[int, int]]) -> Tuple[Tensor, Tensor, int]:
    """spatial_shapes ``(levels, 2)``, level_start_index ``(levels,)`` and ``S``."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def make_msda_inputs(batch: int, shapes: Sequence[Tuple[int, int]], heads: int, channels: int,
                     points: int, queries: int, dtype: torch.dtype = torch.float64,
                     seed: int = 0, low: float = -0.2, high: float = 1.2,
                     requires_grad: bool = True) -> Dict[str, Tensor]:
    """Inputs of the op; locations are uniform in ``[low, high]`` (outside ``[0, 1]`` too)."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index, num_values = level_tensors(shapes)
    levels = len(shapes)
    value = torch.randn(batch, num_values, heads, channels, generator=generator, dtype=dtype)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator,
                           dtype=dtype) * (high - low) + low
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator,
                         dtype=dtype)
    for tensor in (value, locations, weights):
        tensor.requires_grad_(requires_grad)
    return dict(value=value, spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                sampling_locations=locations, attention_weights=weights)


def forward_and_grads(fn, inputs: Dict[str, Tensor], seed: int = 1) -> List[Tensor]:
    """``[out, d value, d locations, d weights]`` for a random output gradient."""
    out = fn(**inputs)
    generator = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=generator, dtype=out.dtype)
    differentiable = [inputs['value'], inputs['sampling_locations'],
                      inputs['attention_weights']]
    grads = torch.autograd.grad(out, differentiable, grad_out.to(out.device))
    return [out.detach()] + [g.detach() for g in grads]


def mmcv_reference(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """mmcv's ``multi_scale_deformable_attn_pytorch`` with the op's signature."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights)


def to_device(inputs: Dict[str, Tensor], device: str) -> Dict[str, Tensor]:
    """Copies of the inputs on ``device``, floating ones as fresh leaves."""
    moved = {}
    for name, tensor in inputs.items():
        copy = tensor.detach().to(device)
        if copy.is_floating_point():
            copy.requires_grad_(tensor.requires_grad)
        moved[name] = copy
    return moved
