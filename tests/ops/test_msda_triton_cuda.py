"""Triton kernels on a CUDA device: equality with the reference, dtypes, autocast."""
import pytest
import torch

from dat_det.ops import multi_scale_deformable_attn, resolve_backend
from dat_det.ops.msda_op import triton_available
from tests.helpers.msda_inputs import (
    SHAPE_CASES,
    case_id,
    forward_and_grads,
    make_msda_inputs,
    to_device,
)

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()),
                                reason='needs CUDA and triton')
NAMES = ('output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')


def _op(backend):
    return lambda **kw: multi_scale_deformable_attn(**kw, backend=backend)


def _assert_all_close(actual, expected, atol, rtol):
    for name, a, e in zip(NAMES, actual, expected):
        torch.testing.assert_close(a.cpu(), e.cpu(), atol=atol, rtol=rtol,
                                   msg=lambda m, n=name: f'{n}: {m}')


def test_auto_picks_triton_on_cuda(monkeypatch):
    monkeypatch.delenv('DAT_DET_MSDA_BACKEND', raising=False)
    assert resolve_backend(None, torch.device('cuda')) == 'triton'


@pytest.mark.parametrize('case', SHAPE_CASES, ids=case_id)
@pytest.mark.parametrize('backend', ['triton', 'gather'])
def test_matches_cpu_reference_float64(case, backend):
    inputs = make_msda_inputs(*case, dtype=torch.float64, seed=11)
    expected = forward_and_grads(_op('pytorch'), inputs)
    actual = forward_and_grads(_op(backend), to_device(inputs, 'cuda'))
    _assert_all_close(actual, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('case', SHAPE_CASES, ids=case_id)
def test_matches_reference_float32(case):
    inputs = to_device(make_msda_inputs(*case, dtype=torch.float32, seed=12), 'cuda')
    _assert_all_close(forward_and_grads(_op('triton'), inputs),
                      forward_and_grads(_op('pytorch'), inputs), atol=1e-4, rtol=1e-4)


def test_gradcheck_float64():
    inputs = to_device(make_msda_inputs(1, ((3, 5), (1, 1)), 2, 3, 2, 3, seed=13), 'cuda')

    def op(value, locations, weights):
        return multi_scale_deformable_attn(value, inputs['spatial_shapes'],
                                           inputs['level_start_index'], locations, weights,
                                           backend='triton')

    assert torch.autograd.gradcheck(
        op, (inputs['value'], inputs['sampling_locations'], inputs['attention_weights']),
        eps=1e-6, atol=1e-7)


@pytest.mark.parametrize('dtype, tol', [(torch.bfloat16, 8e-3), (torch.float16, 1e-3)])
def test_half_inputs_accumulate_in_float32(dtype, tol):
    inputs = make_msda_inputs(*SHAPE_CASES[5], dtype=torch.float32, requires_grad=False,
                              low=0, high=1)
    half = {k: (v.to(dtype) if v.is_floating_point() else v)
            for k, v in to_device(inputs, 'cuda').items()}
    rounded = {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()}
    out = multi_scale_deformable_attn(**half, backend='triton')
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), multi_scale_deformable_attn(**rounded,
                                                                        backend='pytorch'),
                               atol=tol, rtol=tol)


def test_autocast_bfloat16_training_step():
    inputs = to_device(make_msda_inputs(*SHAPE_CASES[5], dtype=torch.float32, low=0, high=1),
                       'cuda')
    proj = torch.nn.Linear(32, 32).cuda()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        value = proj(inputs['value'])
        out = multi_scale_deformable_attn(**{**inputs, 'value': value}, backend='triton')
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert torch.isfinite(proj.weight.grad).all()
    assert inputs['sampling_locations'].grad.dtype == torch.float32
