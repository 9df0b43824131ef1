"""Deformable DETR layers (torch only): 米 init, masks, valid ratios, references, proposals."""
import math

import pytest
import torch

from dat_det.models.layers.deformable_detr import (
    DeformableDecoder,
    DeformableEncoder,
    MSDeformAttn,
    SinePositionalEncoding,
    encoder_proposals,
    encoder_reference_points,
    level_masks,
    level_start_index,
    padding_mask,
    select_topk,
    star_offsets,
    valid_ratios,
)

EMBED, HEADS = 32, 4


def _msda(levels=2, points=2, **kwargs) -> MSDeformAttn:
    return MSDeformAttn(EMBED, HEADS, levels, points, **kwargs)


def _encoder(levels=2, layers=2) -> DeformableEncoder:
    return DeformableEncoder(layers, dict(
        self_attn_cfg=dict(embed_dims=EMBED, num_heads=HEADS, num_levels=levels, num_points=2,
                           dropout=0.0),
        ffn_cfg=dict(embed_dims=EMBED, feedforward_channels=64, ffn_drop=0.0)))


def _padded_batch():
    """Two images, 40x56 and 24x32, padded to 40x56; three levels at strides 8, 16, 32."""
    mask = padding_mask((40, 56), [(40, 56), (24, 32)], torch.device('cpu'))
    feats = [torch.zeros(2, 1, 5, 7), torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 2, 2)]
    return mask, feats, level_masks(mask, feats)


def test_star_init_values():
    attn = MSDeformAttn(embed_dims=64, num_heads=8, num_levels=4, num_points=4)
    bias = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    # head h looks along 2*pi*h/8; the larger of |cos|, |sin| is scaled to 1
    directions = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1],
                               [1, -1]], dtype=torch.float32)
    for k in range(4):
        for lvl in range(4):
            torch.testing.assert_close(bias[:, lvl, k], directions * (k + 1), atol=1e-5,
                                       rtol=0)
    assert torch.equal(attn.sampling_offsets.weight, torch.zeros_like(attn.sampling_offsets.weight))
    assert not attn.attention_weights.weight.any() and not attn.attention_weights.bias.any()
    for proj in (attn.value_proj, attn.output_proj):
        assert not proj.bias.any()
        bound = math.sqrt(6 / (proj.in_features + proj.out_features))  # xavier uniform
        assert proj.weight.abs().max() <= bound and proj.weight.std() > bound / 4
    assert star_offsets(3, 1, 2).shape == (3, 1, 2, 2)


def test_star_init_samples_a_uniform_star():
    """At init every query samples its star pattern with equal weights: check one output."""
    attn = _msda(levels=1, points=1)
    nn_init = torch.nn.init
    nn_init.eye_(attn.value_proj.weight)
    nn_init.eye_(attn.output_proj.weight)
    value = torch.arange(25, dtype=torch.float32).view(1, 25, 1).expand(1, 25, EMBED)
    ref = torch.tensor([[[[0.5, 0.5]]]])  # centre pixel (2, 2) of a 5x5 map
    out = attn(torch.randn(1, 1, EMBED), value.contiguous(), ref, torch.tensor([[5, 5]]),
               torch.tensor([0]))
    # heads 0..3 look right, down, left, up by one pixel: values 13, 17, 11, 7
    expected = torch.tensor([13., 17., 11., 7.]).repeat_interleave(EMBED // HEADS)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize('ref_dim', [2, 4])
def test_msda_matches_mmcv(ref_dim):
    mmcv_ops = pytest.importorskip('mmcv.ops')
    torch.manual_seed(0)
    ours = _msda(levels=2, points=3)
    theirs = mmcv_ops.MultiScaleDeformableAttention(EMBED, HEADS, 2, 3, dropout=0.0,
                                                    batch_first=True)
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.3)
    theirs.load_state_dict(ours.state_dict())
    shapes = torch.tensor([[6, 5], [3, 3]])
    value = torch.randn(2, 39, EMBED)
    query = torch.randn(2, 7, EMBED)
    ref = torch.rand(2, 7, 2, ref_dim)
    mask = torch.zeros(2, 39, dtype=torch.bool)
    mask[1, 20:] = True
    out = ours(query, value, ref, shapes, level_start_index(shapes), mask)
    expected = theirs(query, value=value, reference_points=ref, spatial_shapes=shapes,
                      level_start_index=level_start_index(shapes), key_padding_mask=mask,
                      identity=torch.zeros_like(query))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_msda_gradcheck():
    torch.manual_seed(0)
    attn = MSDeformAttn(8, 2, num_levels=2, num_points=2).double()
    for p in attn.parameters():  # leave the init, where the query has no effect
        torch.nn.init.normal_(p, std=0.3)
    shapes = torch.tensor([[3, 4], [2, 2]])
    value = torch.randn(1, 16, 8, dtype=torch.float64, requires_grad=True)
    query = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    ref = (torch.rand(1, 3, 2, 2, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q, v, r: attn(q, v, r, shapes, level_start_index(shapes)), (query, value, ref),
        atol=1e-5, rtol=1e-4, fast_mode=True)


def test_msda_rejects_bad_inputs():
    attn = _msda(levels=2)
    shapes = torch.tensor([[4, 4], [2, 2]])
    query, value = torch.randn(1, 3, EMBED), torch.randn(1, 20, EMBED)
    with pytest.raises(ValueError, match='2 or 4'):
        attn(query, value, torch.rand(1, 3, 2, 3), shapes, level_start_index(shapes))
    with pytest.raises(ValueError, match='levels'):
        attn(query, value, torch.rand(1, 3, 3, 2), shapes, level_start_index(shapes))
    with pytest.raises(ValueError, match='value has S=21 positions'):
        attn(query, torch.randn(1, 21, EMBED), torch.rand(1, 3, 2, 2), shapes,
             level_start_index(shapes))
    with pytest.raises(ValueError, match='divisible'):
        MSDeformAttn(embed_dims=30, num_heads=4)


def test_valid_ratios_and_reference_points_on_padded_batch():
    mask, feats, masks = _padded_batch()
    assert mask[0].sum() == 0 and mask[1, :24, :32].sum() == 0
    assert mask[1].sum() == 40 * 56 - 24 * 32
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)  # (B, levels, 2) as (w, h)
    # the nearest-downsampled masks of the second image keep 4 of 7 columns and 3 of 5 rows
    # at stride 8, 3 of 4 and 2 of 3 at stride 16, everything at stride 32
    expected = torch.tensor([[[1., 1.], [1., 1.], [1., 1.]],
                             [[4 / 7, 3 / 5], [3 / 4, 2 / 3], [1., 1.]]])
    torch.testing.assert_close(ratios, expected)

    shapes = torch.tensor([f.shape[-2:] for f in feats])
    ref = encoder_reference_points(shapes, ratios)
    assert ref.shape == (2, 35 + 12 + 4, 3, 2)
    # pixel (row 1, col 3) of level 0: centre (3.5, 1.5) over the valid size (4, 3), mapped
    # into each level by that level's valid ratio
    point = ref[1, 1 * 7 + 3]
    torch.testing.assert_close(point, torch.tensor([3.5 / 4, 1.5 / 3]) * ratios[1])
    # first image is unpadded: plain pixel centres over the full size, the same in all levels
    torch.testing.assert_close(ref[0, 7 + 2], torch.tensor([[2.5 / 7, 1.5 / 5]] * 3))
    # valid pixels of every level land inside the valid area of every level
    valid = torch.cat([~m.flatten(1) for m in masks], 1)
    inside = (ref[1] >= 0) & (ref[1] <= ratios[1][None])
    assert inside[valid[1]].all()


def test_positional_encoding_counts_valid_pixels_only():
    """Inside a padded batch, an image's encoding equals that of the image alone."""
    pe = SinePositionalEncoding(num_feats=8, normalize=True, offset=-0.5)
    _, feats, masks = _padded_batch()
    padded = pe(masks[0])
    alone = pe(None, input=torch.zeros(1, 1, 3, 4))
    torch.testing.assert_close(padded[1:, :, :3, :4], alone)
    torch.testing.assert_close(pe(masks[0][:1]), pe(None, input=feats[0][:1]))


def test_masks_reach_the_attention():
    """With the mask, valid outputs ignore whatever lies on the padding; without, they do not."""
    torch.manual_seed(0)
    encoder = _encoder(levels=2).eval()
    shapes = torch.tensor([[4, 6], [2, 3]])
    pad = torch.zeros(1, 4, 6, dtype=torch.bool)
    pad[:, :, 4:] = True
    pad[:, 2:, :] = True
    masks = level_masks(pad, [torch.zeros(1, 1, 4, 6), torch.zeros(1, 1, 2, 3)])
    flat_mask = torch.cat([m.flatten(1) for m in masks], 1)
    ratios = torch.stack([valid_ratios(m) for m in masks], 1)
    feat = torch.randn(1, 30, EMBED)
    pos = torch.randn(1, 30, EMBED)
    noisy = feat.masked_fill(flat_mask[..., None], 0.0) + flat_mask[..., None] * 50.0

    def run(x, mask):
        return encoder(x, pos, shapes, level_start_index(shapes), ratios, padding_mask=mask)

    valid = ~flat_mask[0]
    torch.testing.assert_close(run(feat, flat_mask)[0, valid], run(noisy, flat_mask)[0, valid])
    assert not torch.allclose(run(feat, None)[0, valid], run(noisy, None)[0, valid])


def test_decoder_refines_detached_references():
    torch.manual_seed(0)
    decoder = DeformableDecoder(2, dict(
        self_attn_cfg=dict(embed_dims=EMBED, num_heads=HEADS),
        cross_attn_cfg=dict(embed_dims=EMBED, num_heads=HEADS, num_levels=1, num_points=2),
        ffn_cfg=dict(embed_dims=EMBED, feedforward_channels=64)))
    shapes = torch.tensor([[4, 4]])
    memory = torch.randn(2, 16, EMBED)
    query = torch.randn(2, 5, EMBED, requires_grad=True)
    ref = torch.rand(2, 5, 2)
    regs = torch.nn.ModuleList([torch.nn.Linear(EMBED, 4) for _ in range(2)])
    states, refs = decoder(query, query, memory, ref, shapes, level_start_index(shapes),
                           torch.ones(2, 1, 2), reg_branches=regs)
    assert states.shape == (2, 2, 5, EMBED) and len(refs) == 2
    assert all(r.shape == (2, 5, 4) and not r.requires_grad for r in refs)
    # first layer: the 2-d point becomes a box whose centre moves by the regressed logits
    delta = regs[0](states[0])
    expected_xy = (torch.logit(ref) + delta[..., :2]).sigmoid()
    torch.testing.assert_close(refs[0][..., :2], expected_xy.detach())
    torch.testing.assert_close(refs[0][..., 2:], delta[..., 2:].sigmoid().detach())
    _, plain = decoder(query, query, memory, ref, shapes, level_start_index(shapes),
                       torch.ones(2, 1, 2))
    assert all(torch.equal(r, ref) for r in plain)


def test_two_stage_proposals_never_come_from_padding():
    mask, feats, masks = _padded_batch()
    shapes = torch.tensor([f.shape[-2:] for f in feats])
    flat_mask = torch.cat([m.flatten(1) for m in masks], 1)
    memory = torch.randn(2, flat_mask.shape[1], EMBED)
    out_memory, logits, valid = encoder_proposals(memory, flat_mask, shapes)
    assert not (valid & flat_mask).any()
    assert torch.isinf(logits[~valid]).all() and torch.isfinite(logits[valid]).all()
    assert not out_memory[~valid].any()
    # proposal centres of valid positions lie inside the image: (0, 1) of the valid area
    centres = logits[valid][:, :2].sigmoid()
    assert ((centres > 0) & (centres < 1)).all()
    # padding scores highest, yet the top-k never picks it
    scores = torch.randn(2, flat_mask.shape[1]) + flat_mask * 100.0
    k = 10
    assert flat_mask.gather(1, torch.topk(scores, k, dim=1)[1])[1].all()  # naive top-k does
    topk = select_topk(scores, valid, k)
    assert valid.gather(1, topk).all()
    # fewer positions than queries: all of them, valid ones first
    everything = select_topk(scores, valid, flat_mask.shape[1] + 1)
    assert everything.shape == flat_mask.shape
    num_valid = int(valid[1].sum())
    assert valid[1, everything[1, :num_valid]].all()
    assert not valid[1, everything[1, num_valid:]].any()
