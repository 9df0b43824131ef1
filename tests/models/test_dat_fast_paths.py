"""Inference paths of the DAT attention layers against their autograd paths.

Without autograd, deformable attention builds its position bias a chunk of queries at a time
and window attention runs the fused 4-D SDPA kernel; with autograd both run the unfused path
that ``test_dat_layers.py`` checks against the official code. The two must agree.
"""
from functools import partial

import pytest
import torch

from dat_det.models.layers.dat import DeformableAttention, LocalAttention, ShiftWindowAttention
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
