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
(:data:`OP_NAME`) with a fake implementation (shapes only) and an autograd formula whose
gradients come from a second operator, ``dat_det::multi_scale_deformable_attn_backward``. So
``torch.compile`` and ``torch.jit.trace`` see one node per call, never a graph break, and the
FLOP counter keys on that name. The operator returns its output and, when asked
(``save_taps``, set by :func:`multi_scale_deformable_attn` for the ``gather`` backend when a
gradient will be needed), the bilinear taps of the ``gather`` backend, which autograd saves
for the backward instead of recomputing them (empty tensors otherwise). The backend is a
string argument of the operator:

- ``pytorch``: the exact reference, tap by tap (any device; :mod:`.msda_pytorch`).
- ``gather`` (alias ``cpu``): one weighted gather over all levels (``embedding_bag``); several
  times faster than the reference on CPU. Plain torch, so it runs on any device.
- ``triton``: fused forward and backward kernels for CUDA tensors (CPU tensors too when
  ``TRITON_INTERPRET=1``, which is how they are tested without a GPU). Under
  ``torch.compile`` the operator decomposes into the kernels (``torch.library.wrap_triton``),
  as a ``torch.library.triton_op`` does, so the compiler sees them.
- ``auto``: ``triton`` for CUDA tensors when Triton is importable, ``gather`` for CPU tensors,
  ``pytorch`` otherwise.

The backend comes from the ``backend`` argument, else from the environment variable
``DAT_DET_MSDA_BACKEND``, else ``auto``.

Export: during ``torch.onnx.export`` the public function runs the exact reference
(:func:`dat_det.ops.msda_pytorch.msda_pytorch`) instead of the operator, on the level sizes of
the ``spatial_shapes`` it receives; pass them as traced sizes (e.g. ``feature.shape[-2:]``)
to keep the exported graph valid for every image size.

Precision: computation runs in float32 (float64 when any input is float64) whatever the input
dtypes, also under autocast; the output has the dtype of ``value`` (float64 in the float64
case), and gradients flow back in each input's own dtype.
"""
import contextlib
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import msda_triton
from .msda_gather import BilinearTaps, gather_backward, gather_forward
from .msda_pytorch import msda_pytorch, msda_pytorch_backward
from .msda_validation import check_level_layout, check_level_sizes, check_msda_inputs

OP_NAME = 'dat_det::multi_scale_deformable_attn'
BACKWARD_OP_NAME = 'dat_det::multi_scale_deformable_attn_backward'
BACKENDS = ('pytorch', 'gather', 'triton')
BACKEND_ALIASES = {'cpu': 'gather'}
BACKEND_ENV_VAR = 'DAT_DET_MSDA_BACKEND'

#: ``(levels, 2)`` integer tensor of ``(H, W)``, or the same as Python int pairs
SpatialShapes = Union[Tensor, Sequence[Tuple[int, int]]]


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
    names = ['pytorch', 'gather']
    if triton_available() and (device.type == 'cuda' or triton_interpreter_enabled()):
        names.append('triton')
    return names


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Concrete backend name for an argument / env var / automatic choice on ``device``."""
    name = backend if backend is not None else os.environ.get(BACKEND_ENV_VAR) or 'auto'
    name = BACKEND_ALIASES.get(name.lower(), name.lower())
    if name == 'auto':
        if device.type == 'cuda' and triton_available():
            return 'triton'
        return 'gather' if device.type == 'cpu' else 'pytorch'
    if name not in BACKENDS:
        source = 'backend' if backend is not None else BACKEND_ENV_VAR
        raise ValueError(f'{source}={name!r} is not a multi-scale deformable attention '
                         f"backend; choose one of {BACKENDS + ('auto', ) + tuple(BACKEND_ALIASES)}")
    if name == 'triton':
        if not triton_available():
            raise ValueError('backend triton requested but triton is not installed')
        if device.type != 'cuda' and not triton_interpreter_enabled():
            raise ValueError(f'backend triton needs CUDA tensors, got {device.type} tensors '
                             '(set TRITON_INTERPRET=1 to run the kernels on CPU for testing)')
    return name


def level_sizes(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """``[(H, W)]`` per level as Python ints; reads a tensor back (a device sync, and a graph
    break under ``torch.compile``: pass the sizes as ints where they are known)."""
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(h, w) for h, w in spatial_shapes]


def level_layout(sizes: Sequence[Tuple[int, int]],
                 device: 'torch.device | str | None' = None) -> Tuple[Tensor, Tensor]:
    """``spatial_shapes`` ``(levels, 2)`` and ``level_start_index`` ``(levels,)`` int64 tensors
    of the level sizes ``[(H, W)]`` (Python ints, checked positive)."""
    sizes = check_level_sizes(sizes)
    starts, total = [], 0
    for height, width in sizes:
        starts.append(total)
        total += height * width
    return (torch.tensor(sizes, dtype=torch.long, device=device).view(len(sizes), 2),
            torch.tensor(starts, dtype=torch.long, device=device))


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
    save_taps = name == 'gather' and torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad
        or attention_weights.requires_grad)
    with torch.autocast(device_type=value.device.type, enabled=False):
        return torch.ops.dat_det.multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            name, save_taps)[0]


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


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _out_dtype(value: Tensor, compute_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if compute_dtype == torch.float64 else value.dtype


#: the operator's outputs: the result, then the saved taps (:meth:`BilinearTaps.tensors`)
OpOutputs = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
NUM_TAP_TENSORS = 7


@torch.library.custom_op(OP_NAME, mutates_args=())
def _msda_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
             sampling_locations: Tensor, attention_weights: Tensor, backend: str,
             save_taps: bool = False) -> OpOutputs:
    """The operator (eager): inputs as :func:`multi_scale_deformable_attn`, ``backend`` one
    of :data:`BACKENDS`. Returns the output, then the seven tensors of the ``gather``
    backend's :class:`BilinearTaps` when ``save_taps`` (empty tensors otherwise)."""
    compute = _compute_dtype(value, sampling_locations, attention_weights)
    if spatial_shapes.device.type == 'cpu':
        check_level_layout(value.shape[1], spatial_shapes, level_start_index)
    if backend == 'triton':
        with _direct_triton_launch():
            out = msda_triton.triton_forward(value, spatial_shapes, level_start_index,
                                             sampling_locations, attention_weights, compute)
        return (out, ) + _no_taps(value)
    value_c = value.to(compute)
    locations_c = sampling_locations.to(compute)
    weights_c = attention_weights.to(compute)
    taps = _no_taps(value)
    if backend == 'gather':
        out = gather_forward(value_c, spatial_shapes.long(), level_start_index.long(),
                             locations_c, weights_c, return_taps=save_taps)
        if save_taps:
            out, gathered = out
            taps = gathered.tensors()
    elif backend == 'pytorch':
        out = msda_pytorch(value_c, level_sizes(spatial_shapes), locations_c, weights_c)
    else:
        raise ValueError(f'unknown backend {backend!r}; choose one of {BACKENDS}')
    return (out.to(_out_dtype(value, compute)), ) + taps


def _no_taps(like: Tensor) -> Tuple[Tensor, ...]:
    """Empty stand-ins for the taps (not saved, or not a ``gather`` backend), on the device
    of ``like``, float32 whatever the inputs' dtypes."""
    return tuple(like.new_empty(0, dtype=torch.float32) for _ in range(NUM_TAP_TENSORS))


@_msda_op.register_fake
def _msda_fake(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
               sampling_locations: Tensor, attention_weights: Tensor, backend: str,
               save_taps: bool = False) -> OpOutputs:
    batch, num_values, heads, channels = value.shape
    compute = _compute_dtype(value, sampling_locations, attention_weights)
    out = value.new_empty((batch, sampling_locations.shape[1], heads * channels),
                          dtype=_out_dtype(value, compute))
    if not (save_taps and backend == 'gather'):
        return (out, ) + _no_taps(value)
    # as gather_forward / bilinear_taps make them
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    samples = (batch * num_queries * heads, levels * points)
    index_dtype = torch.int32 if batch * num_values * heads < 2**30 else torch.int64
    rows = value.new_empty(samples + (4, ), dtype=index_dtype)
    first_rows = value.new_empty(samples, dtype=index_dtype)
    weights = value.new_empty(samples + (4, ), dtype=compute)
    per_axis = [value.new_empty(samples + (2, ), dtype=compute) for _ in range(4)]
    return (out, rows, first_rows, weights, *per_axis)


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def _msda_backward_op(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                      level_start_index: Tensor, sampling_locations: Tensor,
                      attention_weights: Tensor, backend: str, value_grad: bool,
                      location_grad: bool, taps: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(grad_value, grad_locations, grad_weights)`` of the operator, each in its
    input's dtype; an empty tensor stands for a gradient not asked for. ``taps``: the tap
    tensors the forward saved (``gather`` backend), or empty ones to recompute them."""
    compute = _compute_dtype(value, sampling_locations, attention_weights)
    if backend == 'triton':
        with _direct_triton_launch():
            grads = msda_triton.triton_backward(grad_out, value, spatial_shapes,
                                                level_start_index, sampling_locations,
                                                attention_weights, compute, value_grad)
    else:
        args = (grad_out.to(compute), value.to(compute))
        locations_c = sampling_locations.to(compute)
        weights_c = attention_weights.to(compute)
        if backend == 'gather':
            saved = (BilinearTaps.from_tensors(tuple(taps), weights_c)
                     if len(taps) == NUM_TAP_TENSORS and taps[0].numel() else None)
            grads = gather_backward(*args, spatial_shapes.long(), level_start_index.long(),
                                    locations_c, weights_c, value_grad, location_grad,
                                    taps=saved)
        elif backend == 'pytorch':
            grads = msda_pytorch_backward(*args, level_sizes(spatial_shapes), locations_c,
                                          weights_c, value_grad, location_grad)
        else:
            raise ValueError(f'unknown backend {backend!r}; choose one of {BACKENDS}')
    grad_value, grad_locations, grad_weights = grads
    return (grad_value.to(value.dtype) if value_grad else value.new_empty(0),
            grad_locations.to(sampling_locations.dtype) if location_grad
            else sampling_locations.new_empty(0),
            grad_weights.to(attention_weights.dtype))


@_msda_backward_op.register_fake
def _msda_backward_fake(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, sampling_locations: Tensor,
                        attention_weights: Tensor, backend: str, value_grad: bool,
                        location_grad: bool, taps: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    return (torch.empty_like(value) if value_grad else value.new_empty(0),
            torch.empty_like(sampling_locations) if location_grad
            else sampling_locations.new_empty(0),
            torch.empty_like(attention_weights))


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend \
        = inputs[:6]
    taps = output[1:]
    ctx.mark_non_differentiable(*taps)
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights, *taps)
    ctx.backend = backend


def _backward(ctx, grad_out: Tensor, *_tap_grads):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *taps = \
        ctx.saved_tensors
    value_grad, _, _, location_grad, weight_grad = ctx.needs_input_grad[:5]
    grads = torch.ops.dat_det.multi_scale_deformable_attn_backward(
        grad_out, value, spatial_shapes, level_start_index, sampling_locations,
        attention_weights, ctx.backend, value_grad, location_grad, taps)
    grad_value, grad_locations, grad_weights = grads
    return (grad_value if value_grad else None, None, None,
            grad_locations if location_grad else None,
            grad_weights if weight_grad else None, None, None)


_msda_op.register_autograd(_backward, setup_context=_setup_context)


def _direct_triton_launch():
    """Eager calls launch the kernels directly, not through the ``wrap_triton`` higher-order
    op (which is only needed while tracing and costs about a millisecond per call)."""
    try:
        from torch._library.triton import set_wrap_triton_enabled
    except ImportError:  # pragma: no cover - private helper of recent torch
        return contextlib.nullcontext()
    return set_wrap_triton_enabled(False)


def _register_triton_decomposition() -> None:
    """Under ``torch.compile`` (AOT tracing, ``FunctionalTensorMode``) the ``triton`` backend
    of both operators decomposes into its kernels, as a ``torch.library.triton_op`` does, so
    that the compiler sees them; the other backends stay one opaque node. So does ``triton``
    in interpreter mode, where ``wrap_triton`` hands back the bare Python kernel, which can
    only run on real tensors."""
    if not msda_triton.TRITON_AVAILABLE or msda_triton.INTERPRET_MODE:
        return
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def forward_rule(mode, op, types, args, kwargs):
        inputs, backend = args[:5], args[5]
        if backend != 'triton':
            return mode.__torch_dispatch__(op, types, args, kwargs)
        compute = _compute_dtype(inputs[0], inputs[3], inputs[4])
        with mode:
            return (msda_triton.triton_forward(*inputs, compute), ) + _no_taps(inputs[0])

    def backward_rule(mode, op, types, args, kwargs):
        (grad_out, value, shapes, starts, locations, weights, backend, value_grad,
         location_grad, _) = args
        if backend != 'triton':
            return mode.__torch_dispatch__(op, types, args, kwargs)
        compute = _compute_dtype(value, locations, weights)
        with mode:
            grad_value, grad_locations, grad_weights = msda_triton.triton_backward(
                grad_out, value, shapes, starts, locations, weights, compute, value_grad)
            return (grad_value if value_grad else value.new_empty(0),
                    grad_locations if location_grad else locations.new_empty(0), grad_weights)

    _msda_op.register_torch_dispatch(FunctionalTensorMode, forward_rule)
    _msda_backward_op.register_torch_dispatch(FunctionalTensorMode, backward_rule)


_register_triton_decomposition()
