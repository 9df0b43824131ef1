"""Inference paths of the DAT attention layers against their autograd paths.

Without autograd, deformable attention builds its position bias a chunk of queries at a time
and window attention runs the fused 4-D SDPA kernel; with autograd both run the unfused path
that ``test_dat_layers.py`` checks against the reference written from the equations. The two
must agree. DAT++'s ``x + DWConv(x)`` (LPU, MLP) runs as one conv with the identity folded into
the kernel, checked here against the plain sum.
"""
from functools import partial

import pytest
import torch

from dat_det.models.layers.dat import (
    DeformableAttention,
    LocalAttention,
    LocalPerceptionUnit,
    ShiftWindowAttention,
    TransformerMLPWithConv,
)
from dat_det.models.layers.dat.residual import depthwise_conv_plus_input
from dat_det.testing.weights import randomize_parameters

BIAS_CASES = {
    'rpe_clamp': dict(offset_range_factor=-1),
    'rpe_tanh': dict(offset_range_factor=2),
    'no_pe': dict(offset_range_factor=3, use_pe=False),
    'dwc_pe': dict(offset_range_factor=-1, dwc_pe=True),
    'fixed_pe': dict(offset_range_factor=-1, fixed_pe=True),
    'log_cpb': dict(offset_range_factor=-1, log_cpb=True),
    'no_off': dict(offset_range_factor=-1, no_off=True),
}


_randomize = partial(randomize_parameters, seed=1, scale=0.3)


@pytest.mark.parametrize('case', list(BIAS_CASES))
@pytest.mark.parametrize('stride', [1, 2])
def test_deformable_attention_chunked_bias_equals_full(case, stride):
    opts = BIAS_CASES[case]
    size = (8, 8) if opts.get('fixed_pe') or opts.get('no_off') else (9, 11)
    attn = DeformableAttention(24, 6, 3, (8, 8), stride=stride, ksize=3, **opts)
    _randomize(attn)
    x = torch.randn(2, 24, *size, requires_grad=True)
    full, pos_full, _ = attn(x)  # autograd path: the bias of all queries at once
    n_sample = pos_full.shape[2] * pos_full.shape[3]
    attn.bias_chunk_elements = 2 * 6 * n_sample * 7  # 7 queries a chunk, ragged last chunk
    calls = []
    position_bias = attn.position_bias
    attn.position_bias = lambda *a: calls.append(a[3:]) or position_bias(*a)
    with torch.no_grad():
        chunked, pos, _ = attn(x)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos, pos_full)
    if attn.rpe_table is not None and not attn.dwc_pe:
        n_query = size[0] * size[1]
        assert calls == [(s, min(s + 7, n_query)) for s in range(0, n_query, 7)]


@pytest.mark.parametrize('shifted', [False, True])
def test_window_attention_fused_path_equals_autograd_path(shifted):
    attn = ShiftWindowAttention(16, 2, 4, shift_size=2) if shifted else LocalAttention(16, 2, 4)
    _randomize(attn)
    x = torch.randn(3, 16, 9, 13, requires_grad=True)
    full = attn(x)[0]
    with torch.no_grad():
        fused = attn(x)[0]
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)


def _grads(out: torch.Tensor, *tensors: torch.Tensor):
    return torch.autograd.grad((out * torch.randn_like(out)).sum(), tensors)


@pytest.mark.parametrize('size', [(5, 3), (1, 7)])
def test_local_perception_unit_folded_identity_equals_sum(size):
    torch.manual_seed(0)
    lpu = LocalPerceptionUnit(6)
    _randomize(lpu)
    x = torch.randn(2, 6, *size, requires_grad=True)
    torch.manual_seed(2)
    ours = lpu(x)
    grads = _grads(ours, x, lpu.weight, lpu.bias)
    torch.manual_seed(2)
    ref = x + torch.nn.Conv2d.forward(lpu, x)
    ref_grads = _grads(ref, x, lpu.weight, lpu.bias)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_dwc_mlp_folded_identity_equals_sum():
    mlp = TransformerMLPWithConv(6, 3)
    _randomize(mlp)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    params = [mlp.dwc.weight, mlp.dwc.bias, mlp.linear1[0].weight]

    def reference(t):
        t = mlp.linear1(t)
        return mlp.linear2(mlp.act(t + mlp.dwc(t)))

    torch.manual_seed(2)
    ours = mlp(x)
    grads = _grads(ours, x, *params)
    torch.manual_seed(2)
    ref = reference(x)
    ref_grads = _grads(ref, x, *params)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_fold_rejects_convs_that_are_not_same_depthwise():
    for conv in (torch.nn.Conv2d(4, 4, 3, 1, 0, groups=4), torch.nn.Conv2d(4, 4, 3, 2, 1, groups=4),
                 torch.nn.Conv2d(4, 4, 3, 1, 1), torch.nn.Conv2d(4, 4, 2, 1, 1, groups=4)):
        with pytest.raises(ValueError, match='cannot fold'):
            depthwise_conv_plus_input(conv, torch.randn(1, 4, 5, 5))
