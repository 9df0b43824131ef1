"""DAT / DAT++ layers against the reference written from the equations
(``dat_det.testing.dat_reference``, DAT++ formulation unless stated)."""
from functools import partial

import pytest
import torch

from dat_det.models.layers.dat import (
    DeformableAttention,
    NeighborhoodAttention2D,
    ShiftWindowAttention,
    TransformerStage,
    key_reference_points,
    neighborhood_attention_2d,
    query_grid,
)
from dat_det.testing.weights import randomize_parameters
from tests.helpers.dat_checks import (
    check_deformable,
    check_mlp,
    check_neighborhood,
    check_stage,
    check_window,
)

_randomize = partial(randomize_parameters, seed=1, scale=0.2)


DATT_CASES = {
    'rpe_clamp': dict(offset_range_factor=-1, use_pe=True),
    'rpe_tanh': dict(offset_range_factor=2, use_pe=True),
    'rpe_no_offset': dict(offset_range_factor=0, use_pe=True),
    'no_pe': dict(offset_range_factor=3, use_pe=False),
    'dwc_pe': dict(offset_range_factor=-1, use_pe=True, dwc_pe=True),
    'fixed_pe': dict(offset_range_factor=-1, use_pe=True, fixed_pe=True),
    'log_cpb': dict(offset_range_factor=-1, use_pe=True, log_cpb=True),
    'no_off': dict(offset_range_factor=-1, use_pe=True, no_off=True),
}


@pytest.mark.parametrize('case', list(DATT_CASES))
@pytest.mark.parametrize('stride,ksize', [(1, 3), (2, 5), (2, 2)])
def test_deformable_attention_matches_reference(case, stride, ksize):
    """Outputs, positions and all gradients; (2, 2) is DAT++'s unpadded offset conv."""
    check_deformable('v2', stride=stride, ksize=ksize, **DATT_CASES[case])


@pytest.mark.parametrize('size', [(9, 11), (6, 13)])
def test_deformable_attention_matches_reference_off_the_pretraining_size(size):
    """The bias table is read at the same normalised displacements at any size."""
    check_deformable('v2', size=size, stride=2, ksize=3, offset_range_factor=-1)
    check_deformable('v2', size=size, stride=1, ksize=3, offset_range_factor=2, log_cpb=True)


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
def test_tiny_key_grids_are_finite_and_match_the_reference(size, stride, ksize):
    """One-cell key and query axes (the release divides by zero there; a single cell is the
    centre of its axis and an offset range of 1 per unit factor)."""
    for orf in (-1, 2):
        attn = DeformableAttention(8, 2, 1, (8, 8), stride=stride, ksize=ksize,
                                   offset_range_factor=orf)
        x = torch.randn(2, 8, *size, requires_grad=True)
        y, pos, _ = attn(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(pos).all()
        assert torch.isfinite(x.grad).all()
        assert torch.isfinite(attn.rpe_table.grad).all()
        check_deformable('v2', size=size, dim=8, heads=2, groups=1, stride=stride, ksize=ksize,
                         offset_range_factor=orf)


def test_reference_points_follow_official_normalisation_and_centre_single_cells():
    refp = key_reference_points(4, 3, torch.float32, 'cpu')
    torch.testing.assert_close(refp[:, 0, 0], (torch.arange(4) + 0.5) / 3 * 2 - 1)
    torch.testing.assert_close(refp[0, :, 1], (torch.arange(3) + 0.5) / 2 * 2 - 1)
    assert key_reference_points(1, 5, torch.float32, 'cpu')[..., 0].eq(0).all()
    grid = query_grid(1, 3, torch.float32, 'cpu')
    torch.testing.assert_close(grid[0, :, 1], torch.tensor([-1.0, 0.0, 1.0]))
    assert grid[..., 0].eq(0).all()


@pytest.mark.parametrize('shifted', [False, True])
@pytest.mark.parametrize('size', [(8, 12), (9, 13)])
def test_window_attention_matches_reference(shifted, size):
    """(9, 13) is padded to the window; the shift mask is that of the padded map."""
    check_window(shifted, size=size)


def test_window_attention_pads_odd_sizes():
    attn = ShiftWindowAttention(8, 2, 7)
    x = torch.randn(1, 8, 9, 15, requires_grad=True)
    y = attn(x)[0]
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('size', [(9, 11), (3, 5)])
def test_neighborhood_attention_matches_natten_semantics(size):
    """natten's clamped windows and bias ``rpb``; (3, 5) is padded to the kernel."""
    check_neighborhood(size=size)


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
def test_mlps_match_reference(conv):
    check_mlp('v2', conv)


@pytest.mark.parametrize('spec,opts', [
    (['N', 'D', 'L', 'S'], dict(use_lpu=True, layer_scale_value=0.5, use_dwc_mlp=True)),
    (['D', 'D'], dict(stride=2, ksize=3, offset_range_factor=-1, dwc_pe=True)),
])
def test_stage_matches_reference_with_gradients(spec, opts):
    """Every block type, LPUs, layer scales, the MLP with conv, on a map that is not a
    multiple of the window; all parameter gradients."""
    check_stage('v2', spec, fmap=(8, 12), size=(9, 11), **opts)


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
