"""DAT / DAT++ layers against the official formulation (``dat_det.testing.dat_official``)."""
from functools import partial

import pytest
import torch

from dat_det.models.layers.dat import (
    DeformableAttention,
    LocalAttention,
    NeighborhoodAttention2D,
    ShiftWindowAttention,
    TransformerMLP,
    TransformerMLPWithConv,
    TransformerStage,
    key_reference_points,
    neighborhood_attention_2d,
    query_grid,
)

pytest.importorskip('einops')

from dat_det.testing import dat_official as ref  # noqa: E402
from dat_det.testing.weights import copy_weights, randomize_parameters  # noqa: E402

_copy_weights = copy_weights
_randomize = partial(randomize_parameters, seed=1, scale=0.2)


DATT_CASES = {
    'rpe_clamp': dict(offset_range_factor=-1, use_pe=True),
    'rpe_tanh': dict(offset_range_factor=2, use_pe=True),
    'no_pe': dict(offset_range_factor=3, use_pe=False),
    'dwc_pe': dict(offset_range_factor=-1, use_pe=True, dwc_pe=True),
    'fixed_pe': dict(offset_range_factor=-1, use_pe=True, fixed_pe=True),
    'log_cpb': dict(offset_range_factor=-1, use_pe=True, log_cpb=True),
    'no_off': dict(offset_range_factor=-1, use_pe=True, no_off=True),
}


@pytest.mark.parametrize('case', list(DATT_CASES))
@pytest.mark.parametrize('stride,ksize', [(1, 3), (2, 5)])
def test_deformable_attention_matches_official(case, stride, ksize):
    opts = DATT_CASES[case]
    dim, heads, groups, size = 24, 6, 3, (8, 8)
    official = ref.DAttentionBaseline(
        size, size, heads, dim // heads, groups, 0.0, 0.0, stride,
        opts['offset_range_factor'], opts['use_pe'], opts.get('dwc_pe', False),
        opts.get('no_off', False), opts.get('fixed_pe', False), ksize,
        opts.get('log_cpb', False))
    ours = DeformableAttention(dim, heads, groups, size, stride=stride, ksize=ksize, **opts)
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, dim, *size)
    x_ref = x.clone().requires_grad_(True)
    x_ours = x.clone().requires_grad_(True)
    y_ref, pos_ref, refp_ref = official(x_ref)
    y, pos, refp = ours(x_ours)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos, pos_ref)
    torch.testing.assert_close(refp, refp_ref)
    grad = torch.randn_like(y)
    y_ref.backward(grad)
    y.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    ours_params = dict(ours.named_parameters())
    for name, p_ref in official.named_parameters():
        p = ours_params[name]
        if p_ref.grad is None:
            assert p.grad is None or not p.requires_grad, name
            continue
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_deformable_attention_gradients_reach_offsets_and_rpe_table():
    attn = DeformableAttention(16, 4, 2, (6, 6), stride=1, offset_range_factor=2, ksize=3)
    _randomize(attn)
    y, _, _ = attn(torch.randn(1, 16, 6, 7))
    y.square().sum().backward()
    for name in ('conv_offset.0.weight', 'conv_offset.3.weight', 'rpe_table'):
        grad = attn.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_deformable_attention_gradcheck():
    attn = DeformableAttention(8, 2, 2, (4, 4), stride=1, offset_range_factor=-1,
                               ksize=3).double()
    _randomize(attn)
    attn.double()
    x = torch.randn(1, 8, 4, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: attn(t)[0], (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('size,stride,ksize', [((7, 7), 8, 9), ((1, 13), 1, 3),
                                               ((13, 1), 2, 3), ((1, 1), 1, 3)])
def test_tiny_key_grids_are_finite(size, stride, ksize):
    for orf in (-1, 2):
        attn = DeformableAttention(8, 2, 1, (8, 8), stride=stride, ksize=ksize,
                                   offset_range_factor=orf)
        x = torch.randn(2, 8, *size, requires_grad=True)
        y, pos, _ = attn(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(pos).all()
        assert torch.isfinite(x.grad).all()
        assert torch.isfinite(attn.rpe_table.grad).all()


def test_reference_points_follow_official_normalisation_and_centre_single_cells():
    refp = key_reference_points(4, 3, torch.float32, 'cpu')
    torch.testing.assert_close(refp[:, 0, 0], (torch.arange(4) + 0.5) / 3 * 2 - 1)
    torch.testing.assert_close(refp[0, :, 1], (torch.arange(3) + 0.5) / 2 * 2 - 1)
    assert key_reference_points(1, 5, torch.float32, 'cpu')[..., 0].eq(0).all()
    grid = query_grid(1, 3, torch.float32, 'cpu')
    torch.testing.assert_close(grid[0, :, 1], torch.tensor([-1.0, 0.0, 1.0]))
    assert grid[..., 0].eq(0).all()


@pytest.mark.parametrize('shifted', [False, True])
def test_window_attention_matches_official(shifted):
    dim, heads, window, fmap = 16, 2, 4, (8, 12)
    if shifted:
        official = ref.ShiftWindowAttention(dim, heads, window, 0.0, 0.0, 2, fmap)
        ours = ShiftWindowAttention(dim, heads, window, shift_size=2)
    else:
        official = ref.LocalAttention(dim, heads, window, 0.0, 0.0)
        ours = LocalAttention(dim, heads, window)
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, dim, *fmap)
    torch.testing.assert_close(ours(x)[0], official(x)[0], rtol=1e-5, atol=1e-5)


def test_window_attention_pads_odd_sizes():
    attn = ShiftWindowAttention(8, 2, 7)
    x = torch.randn(1, 8, 9, 15, requires_grad=True)
    y = attn(x)[0]
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('size', [(9, 11), (3, 5)])
def test_neighborhood_attention_matches_natten_semantics(size):
    official = ref.NaiveNeighborhoodAttention2D(16, 5, 2)
    ours = NeighborhoodAttention2D(16, 5, 2, use_natten=False)
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(ours(x)[0], official(x)[0], rtol=1e-5, atol=1e-5)


def test_neighborhood_attention_relative_bias_indexing():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 6, 5, 4) for _ in range(3))
    rpb = torch.randn(1, 5, 5)
    out = neighborhood_attention_2d(q, k, v, 3, rpb)
    i, j = 5, 0  # bottom-left corner: window rows 3..5, cols 0..2
    keys = k[0, 0, 3:6, 0:3].reshape(9, 4)
    bias = torch.stack([rpb[0, a - i + 2, b - j + 2] for a in range(3, 6) for b in range(3)])
    attn = (keys @ q[0, 0, i, j] + bias).softmax(0)
    torch.testing.assert_close(out[0, 0, i, j], attn @ v[0, 0, 3:6, 0:3].reshape(9, 4))


@pytest.mark.parametrize('conv', [False, True])
def test_mlps_match_official(conv):
    official = (ref.TransformerMLPWithConv if conv else ref.TransformerMLP)(8, 4, 0.0)
    ours = (TransformerMLPWithConv if conv else TransformerMLP)(8, 4, 0.0)
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(ours(x), official(x))


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match='divisible'):
        DeformableAttention(10, 3, 1, (8, 8))
    with pytest.raises(ValueError, match='groups'):
        DeformableAttention(12, 4, 3, (8, 8))
    with pytest.raises(ValueError, match='unsupported block'):
        TransformerStage((8, 8), 8, 8, 1, ['Q'], num_heads=2)
    with pytest.raises(ValueError, match='depth'):
        TransformerStage((8, 8), 8, 8, 2, ['D'], num_heads=2)
    with pytest.raises(ValueError, match='odd'):
        NeighborhoodAttention2D(8, 4, 2)
    attn = DeformableAttention(8, 2, 1, (8, 8), fixed_pe=True)
    with pytest.raises(ValueError, match='fixed_pe'):
        attn(torch.randn(1, 8, 6, 6))
