"""Multi-scale deformable attention: the registered operator and its public function.

Usage::

    from dat_det.ops import multi_scale_deformable_attn
    out = multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights)

Layout and semantics are those of Deformable DETR and mmcv: value ``(B, S, heads, C)``,
spatial_shapes ``(levels, 2)`` int64 ``(H, W)`` (or the same as a sequence of Python int pairs),
level_start_index ``(levels,)``, sampling_locations ``(B, Lq, heads, levels, points, 2)``
normalized ``(x, y)`` with ``(0, 0)`` the top-left and ``(1, 1)`` the bottom-right corner of
each map, attention_weights ``(B, Lq, heads, levels, points)``; the output is
``(B, Lq, heads * C)``. Sampling is bilinear with zero padding and ``align_corners=False``.

The operator is registered with ``torch.library`` as ``dat_det::multi_scale_deformable_attn``
(:data:`OP_NAME`), schema ``(value, spatial_shapes, level_start_index, sampling_locations,
attention_weights, str backend) -> Tensor``, with a fake implementation (shapes only) and an
autograd formula whose gradients come from a second operator,
``dat_det::multi_scale_deformable_attn_backward``. So ``torch.compile`` and ``torch.jit.trace``
see one node per call, never a graph break, and the FLOP counter keys on its name. The
backends are one table (:data:`BACKENDS`, :mod:`dat_det.ops.msda_backends`):

- ``pytorch``: the exact reference, tap by tap (any device; :mod:`.msda_pytorch`).
- ``gather`` (alias ``cpu``): one weighted gather over all levels (``embedding_bag``); several
  times faster than the reference on CPU. Plain torch, so it runs on any device. When a
  gradient will be needed, :func:`multi_scale_deformable_attn` runs it as an operator of its
  own, ``dat_det::multi_scale_deformable_attn_gather``, whose forward hands its bilinear taps
  to its backward.
- ``triton``: fused forward and backward kernels for CUDA tensors (CPU tensors too when
  ``TRITON_INTERPRET=1``, which is how they are tested without a GPU).
  :func:`multi_scale_deformable_attn` runs them as a ``torch.library.triton_op``,
  ``dat_det::multi_scale_deformable_attn_triton``, which ``torch.compile`` decomposes into the
  kernels (in interpreter mode: the opaque operator).
- ``auto``: ``triton`` for CUDA tensors when Triton is importable, ``gather`` for CPU tensors,
  ``pytorch`` otherwise.

In a trace (``torch.jit.trace``, Dynamo's graph, the FLOP counter) every call is one node of
one of these names (:data:`TRACED_OP_NAMES`), all taking the operator's first five arguments.

The backend comes from the ``backend`` argument, else from the environment variable
``DAT_DET_MSDA_BACKEND``, else ``auto``.

Export: during ``torch.onnx.export`` the public function runs the exact reference
(:func:`dat_det.ops.msda_pytorch.msda_pytorch`) instead of the operator, on the level sizes of
the ``spatial_shapes`` it receives; pass them as traced sizes (e.g. ``feature.shape[-2:]``)
to keep the exported graph valid for every image size.

Precision: computation runs in float32 (float64 when any input is float64) whatever the input
dtypes, also under autocast; the output has the dtype of ``value`` (float64 in the float64
case), and gradients flow back in each input's own dtype (:mod:`dat_det.ops.msda_precision`).
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import msda_triton
from .msda_backends import (
    BACKENDS,
    GATHER_OP_NAME,
    automatic_backend,
    empty_gradients,
    output_like,
)
from .msda_layout import SpatialShapes, level_layout, level_sizes
from .msda_pytorch import msda_pytorch
from .msda_validation import check_level_layout, check_level_sizes, check_msda_inputs

__all__ = ['OP_NAME', 'BACKWARD_OP_NAME', 'TRACED_OP_NAMES', 'BACKENDS', 'BACKEND_ALIASES',
           'BACKEND_ENV_VAR', 'SpatialShapes', 'available_backends', 'level_layout',
           'level_sizes', 'multi_scale_deformable_attn', 'resolve_backend', 'triton_available',
           'triton_interpreter_enabled']

OP_NAME = 'dat_det::multi_scale_deformable_attn'
BACKWARD_OP_NAME = 'dat_det::multi_scale_deformable_attn_backward'
#: the operators a call can appear as in a trace (forward only), each taking ``(value,
#: spatial_shapes, level_start_index, sampling_locations, attention_weights, ...)``
TRACED_OP_NAMES = (OP_NAME, GATHER_OP_NAME, msda_triton.OP_NAME)
BACKEND_ALIASES = {'cpu': 'gather'}
BACKEND_ENV_VAR = 'DAT_DET_MSDA_BACKEND'


def triton_available() -> bool:
    """Whether the Triton backend can be imported (Triton installed)."""
    return msda_triton.TRITON_AVAILABLE


def triton_interpreter_enabled() -> bool:
    """Whether the Triton kernels were defined in interpreter mode (``TRITON_INTERPRET=1``
    when :mod:`dat_det.ops.msda_triton` was first imported); they then run on CPU tensors."""
    return msda_triton.TRITON_AVAILABLE and msda_triton.INTERPRET_MODE


def available_backends(device: 'torch.device | str' = 'cpu') -> 'list[str]':
    """Backends that can run on tensors of ``device``."""
    device = torch.device(device)
    return [name for name, backend in BACKENDS.items()
            if backend.unavailable_reason(device) is None]


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Concrete backend name for an argument / env var / automatic choice on ``device``."""
    name = backend if backend is not None else os.environ.get(BACKEND_ENV_VAR) or 'auto'
    name = BACKEND_ALIASES.get(name.lower(), name.lower())
    if name == 'auto':
        return automatic_backend(device)
    if name not in BACKENDS:
        source = 'backend' if backend is not None else BACKEND_ENV_VAR
        choices = tuple(BACKENDS) + ('auto', ) + tuple(BACKEND_ALIASES)
        raise ValueError(f'{source}={name!r} is not a multi-scale deformable attention '
                         f'backend; choose one of {choices}')
    reason = BACKENDS[name].unavailable_reason(device)
    if reason is not None:
        raise ValueError(reason)
    return name


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: SpatialShapes,
                                level_start_index: Optional[Tensor],
                                sampling_locations: Tensor, attention_weights: Tensor,
                                backend: Optional[str] = None) -> Tensor:
    """Multi-scale deformable attention (see the module docstring for layout and backends).

    Args:
        value: ``(B, S, heads, C)`` with ``S = sum(H_l * W_l)``.
        spatial_shapes: ``(levels, 2)`` integer ``(H, W)`` of each level, or the same as
            Python int pairs; then the level layout is checked here, where the ints are
            known (free under ``torch.compile``), and ``level_start_index`` may be None.
        level_start_index: ``(levels,)`` offset of each level in ``S``.
        sampling_locations: ``(B, Lq, heads, levels, points, 2)`` normalized ``(x, y)``.
        attention_weights: ``(B, Lq, heads, levels, points)``.
        backend: ``'pytorch' | 'gather' | 'triton' | 'auto'`` (``'cpu'`` is an alias of
            ``'gather'``); ``None`` reads ``DAT_DET_MSDA_BACKEND`` and falls back to
            ``'auto'``.

    Returns:
        ``(B, Lq, heads * C)`` in the dtype of ``value``.

    Raises:
        ValueError: inconsistent shapes, dtypes, devices or level layout, unknown backend.
        The contents of ``spatial_shapes`` / ``level_start_index`` tensors are checked on CPU
        only (reading them back would synchronize an accelerator).
    """
    if torch.onnx.is_in_onnx_export():
        return _export_decomposition(value, spatial_shapes, sampling_locations,
                                     attention_weights)
    if not isinstance(spatial_shapes, Tensor):
        sizes = check_level_sizes(spatial_shapes, value.shape[1])
        spatial_shapes, starts = level_layout(sizes, value.device)
        level_start_index = starts if level_start_index is None else level_start_index
    elif level_start_index is None:
        raise ValueError('level_start_index is needed with a spatial_shapes tensor')
    check_msda_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                      attention_weights)
    name = resolve_backend(backend, value.device)
    with torch.autocast(device_type=value.device.type, enabled=False):
        return BACKENDS[name].apply(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)


def _export_decomposition(value: Tensor, spatial_shapes: SpatialShapes,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The exact reference on the traced level sizes (plain ONNX gathers and arithmetic)."""
    if isinstance(spatial_shapes, Tensor):
        # 0-dim entries: traced as values, not frozen as constants
        sizes = [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1])
                 for lvl in range(spatial_shapes.shape[0])]
    else:
        sizes = list(spatial_shapes)
    return msda_pytorch(value, sizes, sampling_locations, attention_weights)


@torch.library.custom_op(OP_NAME, mutates_args=())
def _msda_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
             sampling_locations: Tensor, attention_weights: Tensor, backend: str) -> Tensor:
    """The operator (eager): inputs as :func:`multi_scale_deformable_attn`, ``backend`` a
    name of :data:`BACKENDS`."""
    if spatial_shapes.device.type == 'cpu':
        check_level_layout(value.shape[1], spatial_shapes, level_start_index)
    return _backend(backend).forward(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights)


def _backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose one of {tuple(BACKENDS)}')
    return BACKENDS[name]


@_msda_op.register_fake
def _msda_fake(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
               sampling_locations: Tensor, attention_weights: Tensor, backend: str) -> Tensor:
    return output_like(value, sampling_locations, attention_weights)


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def _msda_backward_op(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                      level_start_index: Tensor, sampling_locations: Tensor,
                      attention_weights: Tensor, backend: str, value_grad: bool,
                      location_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(grad_value, grad_locations, grad_weights)`` of the operator, each in its
    input's dtype; an empty tensor stands for a gradient not asked for."""
    return _backend(backend).backward(grad_out, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, value_grad,
                                      location_grad)


@_msda_backward_op.register_fake
def _msda_backward_fake(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, sampling_locations: Tensor,
                        attention_weights: Tensor, backend: str, value_grad: bool,
                        location_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return empty_gradients(value, sampling_locations, attention_weights, value_grad,
                           location_grad)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:5])
    ctx.backend = inputs[5]


def _backward(ctx, grad_out: Tensor):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = \
        ctx.saved_tensors
    value_grad, _, _, location_grad, weight_grad = ctx.needs_input_grad[:5]
    grad_value, grad_locations, grad_weights = \
        torch.ops.dat_det.multi_scale_deformable_attn_backward(
            grad_out, value, spatial_shapes, level_start_index, sampling_locations,
            attention_weights, ctx.backend, value_grad, location_grad)
    return (grad_value if value_grad else None, None, None,
            grad_locations if location_grad else None,
            grad_weights if weight_grad else None, None)


_msda_op.register_autograd(_backward, setup_context=_setup_context)
