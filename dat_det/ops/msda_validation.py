"""Input checks for multi-scale deformable attention.

Shape, dtype and device checks read metadata only: they always run, also while tracing. The
level layout (``S == sum(H * W)``, ``level_start_index`` consistent with ``spatial_shapes``)
is checked where its Python ints are known: on level sizes given as ints
(:func:`check_level_sizes`), or by reading the index tensors back when they are on CPU
(:func:`check_level_layout`; on an accelerator that would force a device sync per call).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

_INTEGER_DTYPES = (torch.int16, torch.int32, torch.int64, torch.uint8, torch.int8)


def check_msda_inputs(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                      sampling_locations: Tensor, attention_weights: Tensor) -> None:
    """Raise ``ValueError`` naming the first inconsistency among the op's input metadata.

    Shapes: value ``(B, S, heads, C)``, spatial_shapes ``(levels, 2)`` of ``(H, W)``,
    level_start_index ``(levels,)``, sampling_locations ``(B, Lq, heads, levels, points, 2)``,
    attention_weights ``(B, Lq, heads, levels, points)``.
    """
    _check_dtypes(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    _check_devices(value, spatial_shapes, level_start_index, sampling_locations,
                   attention_weights)


def _check_dtypes(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor) -> None:
    for name, tensor in (('value', value), ('sampling_locations', sampling_locations),
                         ('attention_weights', attention_weights)):
        if not isinstance(tensor, Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(tensor).__name__}')
        if not tensor.is_floating_point():
            raise ValueError(f'{name} must be a floating point tensor, got {tensor.dtype}')
    for name, tensor in (('spatial_shapes', spatial_shapes),
                         ('level_start_index', level_start_index)):
        if not isinstance(tensor, Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(tensor).__name__}')
        if tensor.dtype not in _INTEGER_DTYPES:
            raise ValueError(f'{name} must be an integer tensor (int64), got {tensor.dtype}')


def _check_shapes(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor) -> None:
    if value.dim() != 4:
        raise ValueError(f'value must have shape (B, S, heads, C), got {tuple(value.shape)}')
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError('sampling_locations must have shape (B, Lq, heads, levels, points, 2), '
                         f'got {tuple(sampling_locations.shape)}')
    batch, _, heads, channels = value.shape
    loc_batch, _, loc_heads, levels, _, _ = sampling_locations.shape
    if loc_batch != batch:
        raise ValueError(f'batch size mismatch: value has {batch}, '
                         f'sampling_locations has {loc_batch}')
    if loc_heads != heads:
        raise ValueError(f'number of heads mismatch: value has {heads}, '
                         f'sampling_locations has {loc_heads}')
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:-1]):
        raise ValueError('attention_weights must have shape (B, Lq, heads, levels, points) = '
                         f'{tuple(sampling_locations.shape[:-1])} to match sampling_locations, '
                         f'got {tuple(attention_weights.shape)}')
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError('spatial_shapes must have shape (levels, 2) holding (H, W), '
                         f'got {tuple(spatial_shapes.shape)}')
    if spatial_shapes.shape[0] != levels:
        raise ValueError(f'number of levels mismatch: spatial_shapes has '
                         f'{spatial_shapes.shape[0]}, sampling_locations has {levels}')
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(f'level_start_index must have shape (levels,) = ({levels},), '
                         f'got {tuple(level_start_index.shape)}')
    if channels == 0 or heads == 0:
        raise ValueError(f'value must have heads > 0 and C > 0, got {tuple(value.shape)}')


def _check_devices(*tensors: Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f'all inputs must be on one device, got {sorted(map(str, devices))}')


def check_level_sizes(sizes: Sequence[Tuple[int, int]],
                      num_values: Optional[int] = None) -> List[Tuple[int, int]]:
    """Level sizes ``[(H, W)]`` as Python ints: positive, and summing to ``num_values``
    positions when given. Under ``torch.compile`` the ints are known at trace time, so the
    check costs nothing at run time."""
    sizes = [tuple(hw) for hw in sizes]
    if any(len(hw) != 2 for hw in sizes):
        raise ValueError(f'spatial_shapes must be (H, W) pairs, got {sizes}')
    if any(h <= 0 or w <= 0 for h, w in sizes):
        raise ValueError(f'spatial_shapes must hold positive (H, W), got {sizes}')
    if num_values is not None:
        total = sum(h * w for h, w in sizes)
        if num_values != total:
            raise ValueError(f'value has S={num_values} positions but spatial_shapes {sizes} '
                             f'sum to {total}')
    return sizes


def check_level_layout(num_values: int, spatial_shapes: Tensor,
                       level_start_index: Tensor) -> None:
    """Check the contents of the index tensors: positive sizes, ``S == sum(H * W)`` and
    ``level_start_index`` = exclusive cumsum. Reads them back, so the operator runs it on CPU
    tensors only."""
    shapes = spatial_shapes.tolist()
    starts = level_start_index.tolist()
    check_level_sizes(shapes)
    expected_starts, total = [], 0
    for h, w in shapes:
        expected_starts.append(total)
        total += h * w
    if starts != expected_starts:
        raise ValueError(f'level_start_index {starts} is inconsistent with spatial_shapes '
                         f'{shapes}: expected {expected_starts}')
    if num_values != total:
        raise ValueError(f'value has S={num_values} positions but spatial_shapes {shapes} '
                         f'sum to {total}')
