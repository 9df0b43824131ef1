"""Half-precision inputs: float32 accumulation, output in the dtype of ``value``.

Tolerance: with inputs rounded to fp16/bf16 and the result rounded once, the output is within
``2 * eps(dtype) * sum|w * v|`` of the float32 result of the rounded inputs; we check against
the float32 result of the same rounded inputs with atol/rtol of 1e-3 (fp16) and 8e-3 (bf16),
and, in relative norm, against the float32 result of the unrounded inputs with 10x that.
"""
import pytest
import torch

from dat_det.ops import multi_scale_deformable_attn
from tests.helpers.msda_inputs import make_msda_inputs

TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
CASE = (2, ((13, 19), (7, 10), (1, 1)), 4, 32, 4, 10)


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_match_float32(backend, dtype):
    inputs = make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False, low=0, high=1)
    half = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    rounded = {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()}
    out = multi_scale_deformable_attn(**half, backend=backend)
    assert out.dtype == dtype
    tol = TOLERANCE[dtype]
    expected = multi_scale_deformable_attn(**rounded, backend='pytorch')
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)
    # rounding the locations moves samples by up to eps * W pixels: compare norms only
    exact = multi_scale_deformable_attn(**inputs, backend='pytorch')
    assert (out.float() - exact).norm() < 10 * tol * exact.norm()


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_half_gradients_match_float32(backend):
    dtype = torch.bfloat16
    inputs = make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False, low=0, high=1)
    half = {k: (v.to(dtype).requires_grad_() if v.is_floating_point() else v)
            for k, v in inputs.items()}
    rounded = {k: (v.detach().float().requires_grad_() if v.is_floating_point() else v)
               for k, v in half.items()}
    differentiable = ('value', 'sampling_locations', 'attention_weights')
    grad_out = torch.randn(2, 10, 4 * 32)
    out = multi_scale_deformable_attn(**half, backend=backend)
    grads = torch.autograd.grad(out, [half[k] for k in differentiable], grad_out.to(dtype))
    out32 = multi_scale_deformable_attn(**rounded, backend='pytorch')
    grads32 = torch.autograd.grad(out32, [rounded[k] for k in differentiable], grad_out)
    for name, g, g32 in zip(differentiable, grads, grads32):
        assert g.dtype == dtype, name
        scale = g32.abs().max()
        torch.testing.assert_close(g.float() / scale, g32 / scale, atol=2e-2, rtol=0,
                                   msg=lambda m, n=name: f'{n}: {m}')


def test_autocast_cpu_bfloat16_mixed_inputs():
    """Under autocast a linear layer hands the op bf16 values with fp32 locations."""
    inputs = make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False, low=0, high=1)
    proj = torch.nn.Linear(32, 32)
    value = inputs['value']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        projected = proj(value)
        assert projected.dtype == torch.bfloat16
        out = multi_scale_deformable_attn(**{**inputs, 'value': projected}, backend='gather')
    assert out.dtype == torch.bfloat16
    expected = multi_scale_deformable_attn(**{**inputs, 'value': projected.float()},
                                           backend='pytorch')
    torch.testing.assert_close(out.float(), expected, atol=8e-3, rtol=8e-3)
