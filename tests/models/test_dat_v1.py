"""DAT v1 (``formulation='v1'``, the ``dat-*`` presets) against a literal port of the v1 release."""
from functools import partial

import pytest
import torch

pytest.importorskip('einops')
pytest.importorskip('timm')

from dat_det.models.layers.dat import (  # noqa: E402
    DeformableAttention,
    TransformerMLPWithConvV1,
    TransformerStage,
    key_reference_points,
    query_grid,
)
from dat_det.testing import dat_v1_official as v1  # noqa: E402
from dat_det.testing.weights import copy_weights, randomize_parameters  # noqa: E402

_randomize = partial(randomize_parameters, seed=1, scale=0.2)
_copy_weights = copy_weights


def _max_diff(a, b):
    return (a - b).abs().max().item()


# offset_range_factor > 0 (tanh * factor / n), == 0 (raw offsets), < 0 (tanh of positions);
# dwc_pe and no bias; stride 2; ksize == stride (the v1 release pads the offset conv anyway).
V1_CASES = {
    'rpe_tanh_range': dict(offset_range_factor=2, use_pe=True),
    'rpe_raw': dict(offset_range_factor=0, use_pe=True),
    'rpe_squash': dict(offset_range_factor=-1, use_pe=True),
    'no_pe': dict(offset_range_factor=3, use_pe=False),
    'dwc_pe': dict(offset_range_factor=2, use_pe=True, dwc_pe=True),
    'stride2': dict(offset_range_factor=2, use_pe=True, stride=2),
    'ksize_eq_stride': dict(offset_range_factor=2, use_pe=True, stride=3),
}


@pytest.mark.parametrize('case', list(V1_CASES))
def test_deformable_attention_v1_matches_release(case):
    opts = dict(V1_CASES[case])
    stride = opts.pop('stride', 1)
    stage_idx = 3 if stride == 3 else 2  # the release picks ksize 5 (stage 2) or 3 (stage 3)
    ksize = [9, 7, 5, 3][stage_idx]
    dim, heads, groups, size = 24, 6, 3, (6, 9)
    official = v1.DAttentionBaseline(size, size, heads, dim // heads, groups, 0.0, 0.0, stride,
                                     opts['offset_range_factor'], opts['use_pe'],
                                     opts.get('dwc_pe', False), False, False, stage_idx)
    ours = DeformableAttention(dim, heads, groups, size, stride=stride, ksize=ksize,
                               formulation='v1', **opts)
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
        torch.testing.assert_close(ours_params[name].grad, p_ref.grad, rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_v2_formulation_differs_from_the_v1_release():
    """The comparison above can fail: DAT++'s grids on v1 weights give other outputs."""
    dim, heads, groups, size = 24, 6, 3, (6, 9)
    official = v1.DAttentionBaseline(size, size, heads, dim // heads, groups, 0.0, 0.0, 1, 2,
                                     True, False, False, False, 2)
    ours = DeformableAttention(dim, heads, groups, size, ksize=5, offset_range_factor=2,
                               formulation='v2')
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, dim, *size)
    with torch.no_grad():
        assert _max_diff(ours(x)[0], official(x)[0]) > 1e-3


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
def test_v1_tiny_key_grids_are_finite(size, stride, ksize, orf):
    attn = DeformableAttention(8, 2, 1, (8, 8), stride=stride, ksize=ksize,
                               offset_range_factor=orf, formulation='v1')
    _randomize(attn, scale=0.5)
    x = torch.randn(2, 8, *size, requires_grad=True)
    y, pos, _ = attn(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(pos).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(attn.rpe_table.grad).all()


def test_v1_mlp_with_conv_matches_release():
    official = v1.TransformerMLPWithConv(8, 4, 0.0)
    ours = TransformerMLPWithConvV1(8, 4, 0.0)
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(ours(x), official(x))


@pytest.mark.parametrize('dwc_mlp', [False, True])
def test_v1_stage_matches_release_on_a_non_square_map(dwc_mlp):
    """Every v1 block type (L, S, D) in one stage, on an 8x12 map with 4x4 windows."""
    fmap, dim, heads, groups, window = (8, 12), 32, 4, 2, 4
    spec = ['L', 'S', 'L', 'D']
    official = v1.TransformerStage(fmap, window, 4, 16, dim, 4, spec, groups, True, -1, heads,
                                   1, 2, 2, False, False, False, 0.0, 0.0, 4, 0.0, [0.0] * 4,
                                   dwc_mlp).eval()
    ours = TransformerStage(fmap, 16, dim, 4, spec, heads, window_size=window, groups=groups,
                            stride=1, offset_range_factor=2, use_pe=True, ksize=5,
                            use_dwc_mlp=dwc_mlp, formulation='v1').eval()
    _randomize(official)
    _copy_weights(official, ours)
    x = torch.randn(2, 16, *fmap)
    with torch.no_grad():
        y_ref, pos_ref, _ = official(x)
        y, positions = ours(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(positions[3][0], pos_ref[3])


def test_bad_formulation_raises():
    with pytest.raises(ValueError, match='unknown DAT formulation'):
        DeformableAttention(8, 2, 1, (8, 8), formulation='v3')
    with pytest.raises(ValueError, match='no_off'):
        DeformableAttention(8, 2, 1, (8, 8), no_off=True, formulation='v1')
