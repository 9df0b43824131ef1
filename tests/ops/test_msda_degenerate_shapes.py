"""Degenerate layouts (a single 1x1, 1xN or Nx1 level, one point, one head, batch 1, samples
all outside the map): output and the three gradients of every backend that runs in this
process equal mmcv's ``multi_scale_deformable_attn_pytorch`` (the Triton kernels: the same
cases in ``triton_interpreter_cases.py``)."""
import pytest
import torch

from dat_det.ops import available_backends, multi_scale_deformable_attn
from tests.ops.msda_test_inputs import (
    DEGENERATE_CASES,
    degenerate_case_id,
    forward_and_grads,
    make_msda_inputs,
    mmcv_reference,
)

pytest.importorskip('mmcv.ops.multi_scale_deform_attn')

NAMES = ('output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')


def assert_matches_mmcv(backend: str, case, dtype: torch.dtype = torch.float64,
                        tol: float = 1e-12) -> None:
    *layout, low, high = case
    inputs = make_msda_inputs(*layout, dtype=dtype, seed=3, low=low, high=high)
    expected = forward_and_grads(mmcv_reference, inputs)
    actual = forward_and_grads(
        lambda **kw: multi_scale_deformable_attn(**kw, backend=backend), inputs)
    for name, a, e in zip(NAMES, actual, expected):
        torch.testing.assert_close(a, e, atol=tol, rtol=tol, msg=lambda m, n=name: f'{n}: {m}')
    if low > 1 or high < 0:  # every sample outside: zero output, zero gradients
        assert all(t.abs().max() == 0 for t in expected)


@pytest.mark.parametrize('backend', [b for b in available_backends('cpu') if b != 'triton'])
@pytest.mark.parametrize('case', DEGENERATE_CASES, ids=degenerate_case_id)
def test_degenerate_layouts_match_mmcv(backend, case):
    assert_matches_mmcv(backend, case)


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_degenerate_layout_float32(backend):
    assert_matches_mmcv(backend, DEGENERATE_CASES[2], torch.float32, 1e-5)
