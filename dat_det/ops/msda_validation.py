"""Input checks for multi-scale deformable attention.

Shape and dtype checks are cheap and always run. The check of ``spatial_shapes`` and
``level_start_index`` against each other and against ``value`` reads their contents; on an
accelerator that would force a device sync on every call, so there it runs once per distinct
pair of tensors (keyed by storage pointer and version counter) and is skipped afterwards.
"""
from collections import OrderedDict
from typing import Tuple

import torch
from torch import Tensor

_CHECKED_INDEX_TENSORS: 'OrderedDict[Tuple, bool]' = OrderedDict()
_CACHE_SIZE = 64

_INTEGER_DTYPES = (torch.int16, torch.int32, torch.int64, torch.uint8, torch.int8)


def check_msda_inputs(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                      sampling_locations: Tensor, attention_weights: Tensor) -> None:
    """Raise ``ValueError`` naming the first inconsistency among the op's inputs.

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
    _check_level_layout(value, spatial_shapes, level_start_index)


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


def _check_level_layout(value: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor) -> None:
    """Check ``S == sum(H * W)``, positive sizes and ``level_start_index`` = exclusive cumsum."""
    key = None
    if spatial_shapes.device.type != 'cpu':
        key = layout_cache_key(spatial_shapes, level_start_index, value.shape[1])
        if key in _CHECKED_INDEX_TENSORS:
            _CHECKED_INDEX_TENSORS.move_to_end(key)
            return
    shapes = spatial_shapes.tolist()
    starts = level_start_index.tolist()
    if any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f'spatial_shapes must hold positive (H, W), got {shapes}')
    expected_starts, total = [], 0
    for h, w in shapes:
        expected_starts.append(total)
        total += h * w
    if starts != expected_starts:
        raise ValueError(f'level_start_index {starts} is inconsistent with spatial_shapes '
                         f'{shapes}: expected {expected_starts}')
    if value.shape[1] != total:
        raise ValueError(f'value has S={value.shape[1]} positions but spatial_shapes {shapes} '
                         f'sum to {total}')
    if key is not None:
        _CHECKED_INDEX_TENSORS[key] = True
        if len(_CHECKED_INDEX_TENSORS) > _CACHE_SIZE:
            _CHECKED_INDEX_TENSORS.popitem(last=False)


def layout_cache_key(spatial_shapes: Tensor, level_start_index: Tensor,
                     num_values: int) -> Tuple:
    """Key of a checked ``(spatial_shapes, level_start_index, S)`` triple: storage pointers and
    version counters (inference tensors have none; their key uses -1)."""
    return (spatial_shapes.device, spatial_shapes.data_ptr(), _version(spatial_shapes),
            level_start_index.data_ptr(), _version(level_start_index), num_values)


def _version(tensor: Tensor) -> int:
    if tensor.is_inference():
        return -1
    return tensor._version
