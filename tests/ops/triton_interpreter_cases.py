"""Triton kernels run by the Triton interpreter on CPU tensors.

Not collected by a plain pytest run (no ``test_`` prefix): ``test_msda_triton_interpreter.py``
runs this module in a subprocess with ``TRITON_INTERPRET=1``, so that the variable, which
Triton reads when a kernel is defined, never leaks into other tests. Shapes are tiny because
the interpreter executes every program in Python.
"""
import os

import pytest
import torch

if os.environ.get('TRITON_INTERPRET') != '1':
    pytest.skip('run with TRITON_INTERPRET=1 (see test_msda_triton_interpreter.py)',
                allow_module_level=True)
pytest.importorskip('triton')

from dat_det.ops import available_backends, multi_scale_deformable_attn  # noqa: E402
from dat_det.ops.msda_op import resolve_backend  # noqa: E402
from tests.helpers.msda_inputs import (  # noqa: E402
    DEGENERATE_CASES,
    case_id,
    degenerate_case_id,
    forward_and_grads,
    make_msda_inputs,
)

TINY_CASES = [
    (1, ((5, 7), (1, 1)), 2, 8, 2, 5),
    (2, ((3, 4), (2, 3), (1, 1)), 1, 5, 3, 18),  # 18 queries: two query blocks, C not 2^k
    (1, ((4, 5), (2, 2), (1, 2), (1, 1)), 3, 16, 1, 3),
]
NAMES = ('output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')


def _op(backend):
    return lambda **kw: multi_scale_deformable_attn(**kw, backend=backend)


def _assert_all_close(actual, expected, atol, rtol):
    for name, a, e in zip(NAMES, actual, expected):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m, n=name: f'{n}: {m}')


def test_interpreter_backend_is_available_but_not_automatic():
    assert 'triton' in available_backends('cpu')
    assert resolve_backend(None, torch.device('cpu')) == 'gather'


@pytest.mark.parametrize('case', TINY_CASES, ids=case_id)
def test_triton_matches_reference_float64(case):
    inputs = make_msda_inputs(*case, dtype=torch.float64, seed=5)
    _assert_all_close(forward_and_grads(_op('triton'), inputs),
                      forward_and_grads(_op('pytorch'), inputs), atol=1e-12, rtol=1e-12)


def test_triton_matches_reference_float32():
    inputs = make_msda_inputs(*TINY_CASES[1], dtype=torch.float32, seed=6)
    _assert_all_close(forward_and_grads(_op('triton'), inputs),
                      forward_and_grads(_op('pytorch'), inputs), atol=1e-5, rtol=1e-5)


def test_triton_gradcheck_float64():
    inputs = make_msda_inputs(1, ((3, 4), (1, 1)), 2, 2, 2, 3, dtype=torch.float64, seed=8)

    def op(value, locations, weights):
        return multi_scale_deformable_attn(value, inputs['spatial_shapes'],
                                           inputs['level_start_index'], locations, weights,
                                           backend='triton')

    assert torch.autograd.gradcheck(
        op, (inputs['value'], inputs['sampling_locations'], inputs['attention_weights']),
        eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize('dtype, tol', [(torch.bfloat16, 8e-3), (torch.float16, 1e-3)])
def test_triton_half_inputs_accumulate_in_float32(dtype, tol):
    inputs = make_msda_inputs(*TINY_CASES[0], dtype=torch.float32, requires_grad=False,
                              low=0, high=1)
    half = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    rounded = {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()}
    out = multi_scale_deformable_attn(**half, backend='triton')
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), multi_scale_deformable_attn(**rounded,
                                                                        backend='pytorch'),
                               atol=tol, rtol=tol)


def test_triton_mixed_dtypes_and_frozen_value():
    """bf16 value with fp32 locations (autocast-like); no value grad requested."""
    inputs = make_msda_inputs(*TINY_CASES[0], dtype=torch.float32, seed=9)
    value = inputs['value'].detach().to(torch.bfloat16)
    out = multi_scale_deformable_attn(**{**inputs, 'value': value}, backend='triton')
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().sum(), [inputs['sampling_locations'],
                                                     inputs['attention_weights']])
    expected_out = multi_scale_deformable_attn(**{**inputs, 'value': value.float()},
                                               backend='pytorch')
    expected = torch.autograd.grad(expected_out.sum(), [inputs['sampling_locations'],
                                                        inputs['attention_weights']])
    torch.testing.assert_close(out.float(), expected_out, atol=8e-3, rtol=8e-3)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('tail, replicas', [(0, 1), (3, 3), (40, 2)])
def test_triton_replicated_coarse_gradients(monkeypatch, tail, replicas):
    """grad_value of the last ``tail`` positions accumulated in ``replicas`` copies."""
    from dat_det.ops import msda_triton
    monkeypatch.setattr(msda_triton, 'COARSE_TAIL_POSITIONS', tail)
    monkeypatch.setattr(msda_triton, 'COARSE_REPLICAS', replicas)
    inputs = make_msda_inputs(*TINY_CASES[1], dtype=torch.float64, seed=10)
    _assert_all_close(forward_and_grads(_op('triton'), inputs),
                      forward_and_grads(_op('pytorch'), inputs), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize('case', [(1, ((5, 7),), 2, 8, 2, 0), (0, ((5, 7),), 2, 8, 2, 3)],
                         ids=['no-queries', 'no-images'])
def test_triton_empty_inputs(case):
    inputs = make_msda_inputs(*case, dtype=torch.float64)
    _assert_all_close(forward_and_grads(_op('triton'), inputs),
                      forward_and_grads(_op('pytorch'), inputs), atol=0, rtol=0)


def test_triton_inference_mode():
    inputs = make_msda_inputs(*TINY_CASES[0], dtype=torch.float32, requires_grad=False)
    with torch.inference_mode():
        out = multi_scale_deformable_attn(**inputs, backend='triton')
    torch.testing.assert_close(out, multi_scale_deformable_attn(**inputs, backend='pytorch'))


def test_registered_operator_passes_opcheck_on_triton():
    """Schema, fake implementation, autograd registration and AOT tracing of the operator
    with the Triton backend (opaque in interpreter mode; see ``msda_backends``)."""
    from tests.helpers.msda_checks import assert_opcheck
    assert_opcheck('triton', TINY_CASES[0])


@pytest.mark.parametrize('case', DEGENERATE_CASES, ids=degenerate_case_id)
def test_triton_degenerate_layouts_match_mmcv(case):
    pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    from tests.helpers.msda_checks import assert_matches_mmcv
    assert_matches_mmcv('triton', case)


def test_triton_op_and_its_autograd_formula():
    """The ``triton_op`` pair that carries the kernels outside interpreter mode (where
    ``torch.compile`` decomposes it), run eagerly: output and gradients of the reference."""
    inputs = make_msda_inputs(*TINY_CASES[1], dtype=torch.float64, seed=12)

    def op(**kw):
        return torch.ops.dat_det.multi_scale_deformable_attn_triton(
            kw['value'], kw['spatial_shapes'], kw['level_start_index'],
            kw['sampling_locations'], kw['attention_weights'])

    _assert_all_close(forward_and_grads(op, inputs), forward_and_grads(_op('pytorch'), inputs),
                      atol=1e-12, rtol=1e-12)
    frozen = {**inputs, 'value': inputs['value'].detach()}
    out = op(**frozen)
    grads = torch.autograd.grad(out.sum(), [frozen['sampling_locations']])
    expected = torch.autograd.grad(_op('pytorch')(**frozen).sum(),
                                   [frozen['sampling_locations']])
    torch.testing.assert_close(grads[0], expected[0], atol=1e-12, rtol=1e-12)
