"""Checks of one backend of the deformable attention op, shared by the op tests and the Triton
interpreter cases: ``torch.library.opcheck`` of the registered operator, and output and
gradients equal to mmcv's ``multi_scale_deformable_attn_pytorch``."""
import torch

from dat_det.ops import OP_NAME, multi_scale_deformable_attn
from tests.helpers.msda_inputs import forward_and_grads, make_msda_inputs, mmcv_reference

# (batch, spatial shapes, heads, channels, points, queries) of the registration tests
OPCHECK_CASE = (2, ((5, 7), (3, 2)), 2, 8, 3, 4)
INPUT_NAMES = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations',
               'attention_weights')
OUTPUT_AND_GRAD_NAMES = ('output', 'grad_value', 'grad_sampling_locations',
                         'grad_attention_weights')


def registered_op(name: str):
    """The default overload of the operator ``namespace::name``."""
    namespace, op_name = name.split('::')
    return getattr(getattr(torch.ops, namespace), op_name).default


def assert_opcheck(backend: str, case=OPCHECK_CASE) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch with
    dynamic shapes of the public operator and its backward for ``backend``, on float32 and
    float64 inputs."""
    for dtype in (torch.float32, torch.float64):
        inputs = make_msda_inputs(*case, dtype=dtype)
        args = tuple(inputs[k] for k in INPUT_NAMES) + (backend, )
        results = torch.library.opcheck(registered_op(OP_NAME), args)
        assert set(results.values()) == {'SUCCESS'}, results


def assert_matches_mmcv(backend: str, case, dtype: torch.dtype = torch.float64,
                        tol: float = 1e-12) -> None:
    """Output and the three gradients of ``backend`` equal mmcv's on a degenerate ``case``
    (layout and location range, see ``msda_inputs.DEGENERATE_CASES``)."""
    *layout, low, high = case
    inputs = make_msda_inputs(*layout, dtype=dtype, seed=3, low=low, high=high)
    expected = forward_and_grads(mmcv_reference, inputs)
    actual = forward_and_grads(
        lambda **kw: multi_scale_deformable_attn(**kw, backend=backend), inputs)
    for name, a, e in zip(OUTPUT_AND_GRAD_NAMES, actual, expected):
        torch.testing.assert_close(a, e, atol=tol, rtol=tol, msg=lambda m, n=name: f'{n}: {m}')
    if low > 1 or high < 0:  # every sample outside: zero output, zero gradients
        assert all(t.abs().max() == 0 for t in expected)
