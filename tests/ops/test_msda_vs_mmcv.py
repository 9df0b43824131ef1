"""Forward and all three gradients of every CPU backend equal mmcv's PyTorch reference."""
import functools

import pytest
import torch

from dat_det.ops import multi_scale_deformable_attn
from tests.helpers.msda_inputs import (
    SHAPE_CASES,
    case_id,
    forward_and_grads,
    make_msda_inputs,
    mmcv_reference,
)

pytest.importorskip('mmcv.ops.multi_scale_deform_attn')

NAMES = ('output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')


def _assert_all_close(actual, expected, atol, rtol):
    for name, a, e in zip(NAMES, actual, expected):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m, n=name: f'{n}: {m}')


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('case', SHAPE_CASES, ids=case_id)
def test_matches_mmcv_float64(backend, case):
    inputs = make_msda_inputs(*case, dtype=torch.float64, seed=len(case_id(case)))
    expected = forward_and_grads(mmcv_reference, inputs)
    actual = forward_and_grads(
        lambda **kw: multi_scale_deformable_attn(**kw, backend=backend), inputs)
    _assert_all_close(actual, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('case', SHAPE_CASES[1::3], ids=case_id)
def test_matches_mmcv_float32(backend, case):
    inputs = make_msda_inputs(*case, dtype=torch.float32, seed=3)
    expected = forward_and_grads(mmcv_reference, inputs)
    actual = forward_and_grads(
        lambda **kw: multi_scale_deformable_attn(**kw, backend=backend), inputs)
    _assert_all_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_locations_far_outside_give_zero():
    inputs = make_msda_inputs(*SHAPE_CASES[1], low=-40.0, high=-2.0)
    expected = forward_and_grads(mmcv_reference, inputs)
    actual = forward_and_grads(
        lambda **kw: multi_scale_deformable_attn(**kw, backend='gather'), inputs)
    assert expected[0].abs().max() == 0
    _assert_all_close(actual, expected, atol=1e-12, rtol=0)


def test_mmcv_compiled_op_has_no_cpu_kernel():
    """mmcv's compiled ``MultiScaleDeformableAttnFunction`` is CUDA/MLU/NPU only; if a CPU
    kernel appears in a later mmcv, this test fails and should become a comparison."""
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    inputs = make_msda_inputs(*SHAPE_CASES[1], dtype=torch.float32, requires_grad=False)
    with pytest.raises((RuntimeError, NotImplementedError)):
        MultiScaleDeformableAttnFunction.apply(
            inputs['value'], inputs['spatial_shapes'], inputs['level_start_index'],
            inputs['sampling_locations'], inputs['attention_weights'], 64)


def test_samples_on_map_edges_whose_corner_rows_alias():
    """Left-edge samples (x0 = -1) share the first-corner row of right-edge samples one pixel
    row up, and of the previous level's / image's last pixel; both must stay separate."""
    inputs = make_msda_inputs(2, ((3, 4), (2, 3)), 2, 16, 4, 3, seed=4)
    edge_points = torch.tensor([[0.05, 0.8], [0.9, 0.5], [0.05, 0.4], [0.02, 0.1]],
                               dtype=torch.float64)  # (x, y) on a 2x3 / 3x4 map
    with torch.no_grad():
        inputs['sampling_locations'][..., :] = edge_points
    expected = forward_and_grads(mmcv_reference, inputs)
    for backend in ('pytorch', 'gather'):
        actual = forward_and_grads(
            functools.partial(multi_scale_deformable_attn, backend=backend), inputs)
        _assert_all_close(actual, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('dtype, tol', [(torch.float32, 5e-6), (torch.float64, 1e-13)])
def test_reference_backend_equals_mmcv_to_rounding(dtype, tol):
    """The tap-by-tap reference and mmcv's ``grid_sample`` formulation differ only by the
    order of floating-point sums: errors relative to each result's largest entry."""
    for index, case in enumerate(SHAPE_CASES):
        inputs = make_msda_inputs(*case, dtype=dtype, seed=index)
        expected = forward_and_grads(mmcv_reference, inputs)
        actual = forward_and_grads(
            functools.partial(multi_scale_deformable_attn, backend='pytorch'), inputs)
        for name, a, e in zip(NAMES, actual, expected):
            scale = e.abs().max().clamp_min(1)
            assert (a - e).abs().max() <= tol * scale, (case_id(case), name)
