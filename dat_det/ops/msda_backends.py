"""The backends of multi-scale deformable attention: one table, :data:`BACKENDS`.

Each backend is a :class:`MSDABackend`: its forward and backward on real tensors (what the
operator ``dat_det::multi_scale_deformable_attn`` and its backward run for that backend
name), the devices it runs on, and :meth:`MSDABackend.apply`, the call
:func:`dat_det.ops.multi_scale_deformable_attn` makes, which is the operator itself unless
the backend has a better path to autograd and the compilers:

- ``gather``, when a gradient will be needed: an operator of its own whose outputs also hold
  the bilinear taps of the forward, which autograd saves for its backward instead of the
  backward recomputing them (some fifty element-wise kernels). The taps never appear in the
  public operator's schema.
- ``triton``, outside interpreter mode: a ``torch.library.triton_op`` pair, which
  ``torch.compile`` decomposes into the kernels so the compiler sees them.

Precision is the same for all (:mod:`dat_det.ops.msda_precision`).
"""
from types import MappingProxyType
from typing import List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from . import msda_triton
from .msda_gather import BilinearTaps, gather_backward, gather_forward
from .msda_layout import level_sizes
from .msda_precision import compute_dtype, output_dtype
from .msda_pytorch import msda_pytorch, msda_pytorch_backward
from .msda_validation import check_level_layout

Grads = Tuple[Tensor, Tensor, Tensor]
GATHER_OP_NAME = 'dat_det::multi_scale_deformable_attn_gather'
GATHER_BACKWARD_OP_NAME = 'dat_det::multi_scale_deformable_attn_gather_backward'


def output_like(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """An empty output ``(B, Lq, heads * C)`` of the right dtype (the operators' fake
    implementations)."""
    batch, _, heads, channels = value.shape
    compute = compute_dtype(value, sampling_locations, attention_weights)
    return value.new_empty((batch, sampling_locations.shape[1], heads * channels),
                           dtype=output_dtype(value, compute))


def gradients_as_inputs(grads: Tuple[Optional[Tensor], Optional[Tensor], Tensor],
                        value: Tensor, sampling_locations: Tensor, attention_weights: Tensor,
                        value_grad: bool, location_grad: bool) -> Grads:
    """Gradients in their inputs' dtypes; an empty tensor where one was not asked for."""
    grad_value, grad_locations, grad_weights = grads
    return (grad_value.to(value.dtype) if value_grad else value.new_empty(0),
            grad_locations.to(sampling_locations.dtype) if location_grad
            else sampling_locations.new_empty(0),
            grad_weights.to(attention_weights.dtype))


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class MSDABackend:
    """One implementation of the operator (see the module docstring)."""

    name: str = ''

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        """Why the backend cannot run on tensors of ``device``; None when it can."""
        return None

    def preferred_for(self, device: torch.device) -> bool:
        """Whether ``auto`` may pick it for ``device`` (the first such in the table)."""
        return True

    def forward(self, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        """The output ``(B, Lq, heads * C)`` (real tensors, no autograd)."""
        raise NotImplementedError

    def backward(self, grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                 level_start_index: Tensor, sampling_locations: Tensor,
                 attention_weights: Tensor, value_grad: bool, location_grad: bool) -> Grads:
        """``(grad_value, grad_locations, grad_weights)`` in the inputs' dtypes, an empty tensor
        for a gradient not asked for (real tensors, no autograd)."""
        raise NotImplementedError

    def apply(self, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
              sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        """What :func:`dat_det.ops.multi_scale_deformable_attn` runs (checked inputs)."""
        return torch.ops.dat_det.multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            self.name)


class PytorchBackend(MSDABackend):
    """The exact reference, tap by tap (:mod:`dat_det.ops.msda_pytorch`); any device."""

    name = 'pytorch'

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        compute = compute_dtype(value, sampling_locations, attention_weights)
        out = msda_pytorch(value.to(compute), level_sizes(spatial_shapes),
                           sampling_locations.to(compute), attention_weights.to(compute))
        return out.to(output_dtype(value, compute))

    def backward(self, grad_out, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights, value_grad, location_grad):
        compute = compute_dtype(value, sampling_locations, attention_weights)
        grads = msda_pytorch_backward(
            grad_out.to(compute), value.to(compute), level_sizes(spatial_shapes),
            sampling_locations.to(compute), attention_weights.to(compute), value_grad,
            location_grad)
        return gradients_as_inputs(grads, value, sampling_locations, attention_weights,
                                   value_grad, location_grad)


class GatherBackend(MSDABackend):
    """One weighted gather over all levels (:mod:`dat_det.ops.msda_gather`); plain torch on
    any device, chosen automatically for CPU tensors."""

    name = 'gather'

    def preferred_for(self, device):
        return device.type == 'cpu'

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        return _gather_forward(value, spatial_shapes, level_start_index, sampling_locations,
                               attention_weights, save_taps=False)[0]

    def backward(self, grad_out, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights, value_grad, location_grad):
        return _gather_backward(grad_out, value, spatial_shapes, level_start_index,
                                sampling_locations, attention_weights, value_grad,
                                location_grad, taps=None)

    def apply(self, value, spatial_shapes, level_start_index, sampling_locations,
              attention_weights):
        if not _needs_grad(value, sampling_locations, attention_weights):
            return super().apply(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)
        return torch.ops.dat_det.multi_scale_deformable_attn_gather(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights)[0]


class TritonBackend(MSDABackend):
    """Fused forward and backward kernels (:mod:`dat_det.ops.msda_triton`) for CUDA tensors,
    for CPU tensors too in interpreter mode (``TRITON_INTERPRET=1``), chosen automatically for
    CUDA tensors."""

    name = 'triton'

    def unavailable_reason(self, device):
        if not msda_triton.TRITON_AVAILABLE:
            return 'backend triton requested but triton is not installed'
        if device.type != 'cuda' and not msda_triton.INTERPRET_MODE:
            return (f'backend triton needs CUDA tensors, got {device.type} tensors (set '
                    'TRITON_INTERPRET=1 to run the kernels on CPU for testing)')
        return None

    def preferred_for(self, device):
        return device.type == 'cuda' and msda_triton.TRITON_AVAILABLE

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        return torch.ops.dat_det.multi_scale_deformable_attn_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    def backward(self, grad_out, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights, value_grad, location_grad):
        grads = torch.ops.dat_det.multi_scale_deformable_attn_triton_backward(
            grad_out, value, spatial_shapes, level_start_index, sampling_locations,
            attention_weights, value_grad)
        return gradients_as_inputs(grads, value, sampling_locations, attention_weights,
                                   value_grad, location_grad)

    def apply(self, value, spatial_shapes, level_start_index, sampling_locations,
              attention_weights):
        if msda_triton.INTERPRET_MODE:
            # the interpreter runs kernels on real tensors only: the compilers must not trace
            # into them, so the opaque operator it is
            return super().apply(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)
        return torch.ops.dat_det.multi_scale_deformable_attn_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


#: name -> backend, in the order ``auto`` tries them
BACKENDS: Mapping[str, MSDABackend] = MappingProxyType(
    {backend.name: backend for backend in (TritonBackend(), GatherBackend(), PytorchBackend())})


def automatic_backend(device: torch.device) -> str:
    """The first backend of the table that prefers ``device`` and runs there."""
    return next(name for name, backend in BACKENDS.items()
                if backend.preferred_for(device) and backend.unavailable_reason(device) is None)


# ----------------------------------------------------------------------------------------
# gather: forward and backward on the compute dtype, and the operator pair that hands the
# forward's taps to the backward


def _gather_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                    sampling_locations: Tensor, attention_weights: Tensor,
                    save_taps: bool) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """The output and, if ``save_taps``, the tensors of its :class:`BilinearTaps`."""
    compute = compute_dtype(value, sampling_locations, attention_weights)
    out = gather_forward(value.to(compute), spatial_shapes.long(), level_start_index.long(),
                         sampling_locations.to(compute), attention_weights.to(compute),
                         return_taps=save_taps)
    out, taps = out if save_taps else (out, None)
    return out.to(output_dtype(value, compute)), (taps.tensors() if save_taps else ())


def _gather_backward(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                     level_start_index: Tensor, sampling_locations: Tensor,
                     attention_weights: Tensor, value_grad: bool, location_grad: bool,
                     taps: Optional[Tuple[Tensor, ...]]) -> Grads:
    """Gradients from the forward's tap tensors, or recomputing them (``taps=None``)."""
    compute = compute_dtype(value, sampling_locations, attention_weights)
    weights = attention_weights.to(compute)
    saved = None if taps is None else BilinearTaps.from_tensors(taps, weights)
    grads = gather_backward(grad_out.to(compute), value.to(compute), spatial_shapes.long(),
                            level_start_index.long(), sampling_locations.to(compute), weights,
                            value_grad, location_grad, taps=saved)
    return gradients_as_inputs(grads, value, sampling_locations, attention_weights,
                               value_grad, location_grad)


GatherOutputs = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op(GATHER_OP_NAME, mutates_args=())
def _gather_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
               sampling_locations: Tensor, attention_weights: Tensor) -> GatherOutputs:
    """The ``gather`` backend's output, then its seven tap tensors
    (:meth:`BilinearTaps.tensors`) for the backward."""
    if spatial_shapes.device.type == 'cpu':  # as the public operator checks
        check_level_layout(value.shape[1], spatial_shapes, level_start_index)
    out, taps = _gather_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                attention_weights, save_taps=True)
    return (out, *taps)


@_gather_op.register_fake
def _gather_fake(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                 sampling_locations: Tensor, attention_weights: Tensor) -> GatherOutputs:
    # the taps as msda_gather.bilinear_taps makes them
    batch, num_values, heads, _ = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    compute = compute_dtype(value, sampling_locations, attention_weights)
    samples = (batch * num_queries * heads, levels * points)
    index_dtype = torch.int32 if batch * num_values * heads < 2**30 else torch.int64
    rows = value.new_empty(samples + (4, ), dtype=index_dtype)
    first_rows = value.new_empty(samples, dtype=index_dtype)
    weights = value.new_empty(samples + (4, ), dtype=compute)
    per_axis = [value.new_empty(samples + (2, ), dtype=compute) for _ in range(4)]
    return (output_like(value, sampling_locations, attention_weights), rows, first_rows,
            weights, *per_axis)


@torch.library.custom_op(GATHER_BACKWARD_OP_NAME, mutates_args=())
def _gather_backward_op(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, sampling_locations: Tensor,
                        attention_weights: Tensor, value_grad: bool, location_grad: bool,
                        taps: List[Tensor]) -> Grads:
    """Gradients of :func:`_gather_op` from its taps (see :meth:`MSDABackend.backward`)."""
    return _gather_backward(grad_out, value, spatial_shapes, level_start_index,
                            sampling_locations, attention_weights, value_grad, location_grad,
                            tuple(taps))


@_gather_backward_op.register_fake
def _gather_backward_fake(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor,
                          level_start_index: Tensor, sampling_locations: Tensor,
                          attention_weights: Tensor, value_grad: bool, location_grad: bool,
                          taps: List[Tensor]) -> Grads:
    return empty_gradients(value, sampling_locations, attention_weights, value_grad,
                           location_grad)


def empty_gradients(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor,
                    value_grad: bool, location_grad: bool) -> Grads:
    """Gradients' shapes and dtypes (the backward operators' fake implementations)."""
    return (torch.empty_like(value) if value_grad else value.new_empty(0),
            torch.empty_like(sampling_locations) if location_grad
            else sampling_locations.new_empty(0),
            torch.empty_like(attention_weights))


def _gather_setup_context(ctx, inputs, output) -> None:
    taps = output[1:]
    ctx.mark_non_differentiable(*taps)
    ctx.save_for_backward(*inputs, *taps)


def _gather_autograd_backward(ctx, grad_out: Tensor, *_tap_grads):
    value, spatial_shapes, level_start_index, locations, weights, *taps = ctx.saved_tensors
    value_grad, _, _, location_grad, weight_grad = ctx.needs_input_grad
    grad_value, grad_locations, grad_weights = \
        torch.ops.dat_det.multi_scale_deformable_attn_gather_backward(
            grad_out, value, spatial_shapes, level_start_index, locations, weights,
            value_grad, location_grad, taps)
    return (grad_value if value_grad else None, None, None,
            grad_locations if location_grad else None, grad_weights if weight_grad else None)


_gather_op.register_autograd(_gather_autograd_backward, setup_context=_gather_setup_context)
