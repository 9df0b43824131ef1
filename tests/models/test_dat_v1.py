"""DAT v1 (``formulation='v1'``, the ``dat-*`` presets) against the reference written from the
equations with the v1 release's details (``dat_det.testing.dat_reference.DETAILS['v1']``)."""
from functools import partial

import pytest
import torch

from dat_det.models.layers.dat import (
    DeformableAttention,
    key_reference_points,
    query_grid,
)
from dat_det.testing.weights import randomize_parameters
from tests.helpers.dat_checks import check_deformable, check_mlp, check_stage

_randomize = partial(randomize_parameters, seed=1, scale=0.2)


# offset_range_factor > 0 (tanh * factor / n), == 0 (raw offsets), < 0 (tanh of positions);
# dwc_pe, fixed_pe, log_cpb (options dat_det adds to v1) and no bias; stride 2; ksize ==
# stride (the v1 release pads the offset conv anyway).
V1_CASES = {
    'rpe_tanh_range': dict(offset_range_factor=2),
    'rpe_raw': dict(offset_range_factor=0),
    'rpe_squash': dict(offset_range_factor=-1),
    'no_pe': dict(offset_range_factor=3, use_pe=False),
    'dwc_pe': dict(offset_range_factor=2, dwc_pe=True),
    'fixed_pe': dict(offset_range_factor=2, fixed_pe=True),
    'log_cpb': dict(offset_range_factor=-1, log_cpb=True),
    'stride2': dict(offset_range_factor=2, stride=2, ksize=5),
    'ksize_eq_stride': dict(offset_range_factor=2, stride=3, ksize=3),
}


@pytest.mark.parametrize('case', list(V1_CASES))
def test_deformable_attention_v1_matches_reference(case):
    """Outputs, positions and all gradients on a non-square 6x9 map."""
    opts = dict(V1_CASES[case])
    opts.setdefault('ksize', 5)
    check_deformable('v1', size=(6, 9), q_size=(6, 9), **opts)


def test_v1_grids_and_offset_range():
    refp = key_reference_points(4, 3, torch.float32, 'cpu', 'v1')
    torch.testing.assert_close(refp[:, 0, 0], (torch.arange(4) + 0.5) / 4 * 2 - 1)
    torch.testing.assert_close(refp[0, :, 1], (torch.arange(3) + 0.5) / 3 * 2 - 1)
    torch.testing.assert_close(query_grid(4, 3, torch.float32, 'cpu', 'v1'), refp)
    # a one-cell axis is its centre in both formulations
    for formulation in ('v1', 'v2'):
        assert key_reference_points(1, 5, torch.float32, 'cpu', formulation)[..., 0].eq(0).all()
        assert query_grid(1, 5, torch.float32, 'cpu', formulation)[..., 0].eq(0).all()


@pytest.mark.parametrize('size,stride,ksize', [((7, 7), 8, 9), ((1, 13), 1, 3),
                                               ((13, 1), 2, 3), ((1, 1), 1, 3)])
@pytest.mark.parametrize('orf', [-1, 0, 2])
def test_v1_tiny_key_grids_are_finite_and_match_the_reference(size, stride, ksize, orf):
    attn = DeformableAttention(8, 2, 1, (8, 8), stride=stride, ksize=ksize,
                               offset_range_factor=orf, formulation='v1')
    _randomize(attn, scale=0.5)
    x = torch.randn(2, 8, *size, requires_grad=True)
    y, pos, _ = attn(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(pos).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(attn.rpe_table.grad).all()
    check_deformable('v1', size=size, dim=8, heads=2, groups=1, stride=stride, ksize=ksize,
                     offset_range_factor=orf)


@pytest.mark.parametrize('conv', [False, True])
def test_v1_mlps_match_reference(conv):
    """The plain MLP, and the v1 release's ``act(dwc(linear1(x)))``."""
    check_mlp('v1', conv)


@pytest.mark.parametrize('dwc_mlp', [False, True])
def test_v1_stage_matches_reference_on_a_non_square_map(dwc_mlp):
    """Every v1 block type (L, S, D) in one stage, on an 8x12 map with 4x4 windows, with
    gradients; and at a size the v1 release rejects (9x13: windows padded)."""
    spec = ['L', 'S', 'L', 'D']
    check_stage('v1', spec, fmap=(8, 12), use_dwc_mlp=dwc_mlp)
    check_stage('v1', spec, fmap=(8, 12), size=(9, 13), use_dwc_mlp=dwc_mlp, grads=False)


def test_bad_formulation_raises():
    with pytest.raises(ValueError, match='unknown DAT formulation'):
        DeformableAttention(8, 2, 1, (8, 8), formulation='v3')
    with pytest.raises(ValueError, match='no_off'):
        DeformableAttention(8, 2, 1, (8, 8), no_off=True, formulation='v1')
