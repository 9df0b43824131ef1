"""Multi-scale deformable attention: the public op and its backend dispatcher.

Usage::

    from dat_det.ops import multi_scale_deformable_attn
    out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights)

Layout and semantics are those of Deformable DETR and mmcv: value ``(B, S, heads, C)``,
spatial_shapes ``(levels, 2)`` int64 ``(H, W)``, level_start_index ``(levels,)``,
sampling_locations ``(B, Lq, heads, levels, points, 2)`` normalized ``(x, y)`` with ``(0, 0)``
the top-left and ``(1, 1)`` the bottom-right corner of each map, attention_weights
``(B, Lq, heads, levels, points)``; the output is ``(B, Lq, heads * C)``. Sampling is bilinear
with zero padding and ``align_corners=False``.

Backends:

- ``pytorch``: the exact ``grid_sample`` reference (any device).
- ``cpu``: one weighted gather over all levels (``embedding_bag``); several times faster than
  the reference on CPU. Plain torch, so it also runs on other devices.
- ``triton``: fused forward and backward kernels for CUDA tensors (CPU tensors too when
  ``TRITON_INTERPRET=1``, which is how they are tested without a GPU).
- ``auto``: ``triton`` for CUDA tensors when Triton is importable, ``cpu`` for CPU tensors,
  ``pytorch`` otherwise.

The backend comes from the ``backend`` argument, else from the environment variable
``DAT_DET_MSDA_BACKEND``, else ``auto``.

Precision: computation runs in float32 (float64 when any input is float64) whatever the input
dtypes, also under autocast; the output has the dtype of ``value`` (float64 in the float64
case), and gradients flow back in each input's own dtype.
"""
import os
from typing import Optional

import torch
from torch import Tensor

from .msda_cpu import msda_gather
from .msda_pytorch import msda_pytorch
from .msda_validation import check_msda_inputs

BACKENDS = ('pytorch', 'cpu', 'triton')
BACKEND_ENV_VAR = 'DAT_DET_MSDA_BACKEND'


def triton_available() -> bool:
    """Whether the Triton backend can be imported (Triton installed)."""
    from . import msda_triton
    return msda_triton.TRITON_AVAILABLE


def triton_interpreter_enabled() -> bool:
    """Whether the Triton kernels were defined in interpreter mode (``TRITON_INTERPRET=1``
    when :mod:`dat_det.ops.msda_triton` was first imported); they then run on CPU tensors."""
    from . import msda_triton
    return msda_triton.TRITON_AVAILABLE and msda_triton.INTERPRET_MODE


def available_backends(device: 'torch.device | str' = 'cpu') -> 'list[str]':
    """Backends that can run on tensors of ``device``."""
    device = torch.device(device)
    names = ['pytorch', 'cpu']
    if triton_available() and (device.type == 'cuda' or triton_interpreter_enabled()):
        names.append('triton')
    return names


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Concrete backend name for an argument / env var / automatic choice on ``device``."""
    name = backend if backend is not None else os.environ.get(BACKEND_ENV_VAR) or 'auto'
    name = name.lower()
    if name == 'auto':
        if device.type == 'cuda' and triton_available():
            return 'triton'
        return 'cpu' if device.type == 'cpu' else 'pytorch'
    if name not in BACKENDS:
        source = 'backend' if backend is not None else BACKEND_ENV_VAR
        raise ValueError(f'{source}={name!r} is not a multi-scale deformable attention '
                         f"backend; choose one of {BACKENDS + ('auto',)}")
    if name == 'triton':
        if not triton_available():
            raise ValueError('backend triton requested but triton is not installed')
        if device.type != 'cuda' and not triton_interpreter_enabled():
            raise ValueError(f'backend triton needs CUDA tensors, got {device.type} tensors '
                             '(set TRITON_INTERPRET=1 to run the kernels on CPU for testing)')
    return name


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: Tensor,
                                level_start_index: Tensor, sampling_locations: Tensor,
                                attention_weights: Tensor,
                                backend: Optional[str] = None) -> Tensor:
    """Multi-scale deformable attention (see the module docstring for layout and backends).

    Args:
        value: ``(B, S, heads, C)`` with ``S = sum(H_l * W_l)``.
        spatial_shapes: ``(levels, 2)`` integer ``(H, W)`` of each level.
        level_start_index: ``(levels,)`` offset of each level in ``S``.
        sampling_locations: ``(B, Lq, heads, levels, points, 2)`` normalized ``(x, y)``.
        attention_weights: ``(B, Lq, heads, levels, points)``.
        backend: ``'pytorch' | 'cpu' | 'triton' | 'auto'``; ``None`` reads
            ``DAT_DET_MSDA_BACKEND`` and falls back to ``'auto'``.

    Returns:
        ``(B, Lq, heads * C)`` in the dtype of ``value``.

    Raises:
        ValueError: inconsistent shapes, dtypes, devices or level layout, unknown backend.
    """
    check_msda_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                      attention_weights)
    name = resolve_backend(backend, value.device)
    float64 = torch.float64 in (value.dtype, sampling_locations.dtype, attention_weights.dtype)
    compute_dtype = torch.float64 if float64 else torch.float32
    out_dtype = torch.float64 if float64 else value.dtype
    with torch.autocast(device_type=value.device.type, enabled=False):
        if name == 'triton':
            from .msda_triton import msda_triton
            # the kernels load any float dtype and accumulate in float32 (float64 if asked)
            out = msda_triton(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, compute_dtype=compute_dtype)
        else:
            value_c = value.to(compute_dtype)
            locations_c = sampling_locations.to(compute_dtype)
            weights_c = attention_weights.to(compute_dtype)
            if name == 'cpu':
                out = msda_gather(value_c, spatial_shapes.long(), level_start_index.long(),
                                  locations_c, weights_c)
            else:
                shapes = [tuple(hw) for hw in spatial_shapes.tolist()]
                out = msda_pytorch(value_c, shapes, locations_c, weights_c)
    return out.to(out_dtype)
