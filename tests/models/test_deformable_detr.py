"""Deformable DETR detector: equal to mmdet 3.3's with converted weights; trains; predicts."""
import copy

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import dat_det.models  # noqa: E402,F401
from dat_det.models.checkpoint import from_mmdet, to_mmdet  # noqa: E402
from dat_det.models.layers.deformable_detr import (  # noqa: E402
    MSDeformAttn,
    encoder_proposals,
)
from tests.helpers.detr_builders import (  # noqa: E402
    NUM_CLASSES,
    VARIANTS,
    make_batch,
    tiny_detr_cfg,
)

register_all_modules()


def build_pair(variant: str, seed=0):
    """mmdet's DeformableDETR with perturbed init, and ours loaded with converted weights."""
    torch.manual_seed(seed)
    theirs = MODELS.build(tiny_detr_cfg(**VARIANTS[variant], detector='DeformableDETR'))
    theirs.init_weights()
    with torch.no_grad():  # leave the symmetric init so that every parameter matters
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = MODELS.build(tiny_detr_cfg(**VARIANTS[variant]))
    ours.load_state_dict(from_mmdet(theirs.state_dict()), strict=True)
    return theirs, ours


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_equal_to_mmdet(variant):
    theirs, ours = build_pair(variant)
    inputs, samples = make_batch()

    theirs.eval()
    ours.eval()
    with torch.no_grad():
        expected = theirs.predict(inputs, copy.deepcopy(samples))
        results = ours.predict(inputs, copy.deepcopy(samples))
    for exp, res in zip(expected, results):
        torch.testing.assert_close(res.pred_instances.scores, exp.pred_instances.scores,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.pred_instances.bboxes, exp.pred_instances.bboxes,
                                   atol=1e-4, rtol=1e-4)
        assert torch.equal(res.pred_instances.labels, exp.pred_instances.labels)

    theirs.train()
    ours.train()
    expected = theirs.loss(inputs, copy.deepcopy(samples))
    losses = ours.loss(inputs, copy.deepcopy(samples))
    assert losses.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], atol=1e-4, rtol=1e-4, msg=key)
    sum(expected.values()).backward()
    sum(losses.values()).backward()
    grads = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    theirs_grads = from_mmdet({k: p.grad for k, p in theirs.named_parameters()
                               if p.grad is not None})
    assert grads.keys() == theirs_grads.keys()
    for key, grad in grads.items():
        torch.testing.assert_close(grad, theirs_grads[key], atol=1e-4, rtol=1e-3, msg=key)


def test_state_dict_mapping_round_trips():
    theirs, ours = build_pair('refine')
    mmdet_sd = theirs.state_dict()
    assert list(to_mmdet(from_mmdet(mmdet_sd))) == list(mmdet_sd)
    assert set(from_mmdet(mmdet_sd)) == set(ours.state_dict())
    renamed = [k for k in ours.state_dict() if k not in mmdet_sd]
    assert renamed and all(k.startswith(('encoder.', 'decoder.')) for k in renamed)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_forward_modes(variant):
    torch.manual_seed(0)
    model = MODELS.build(tiny_detr_cfg(**VARIANTS[variant]))
    model.init_weights()
    inputs, samples = make_batch()
    model.train()
    losses = model(inputs, copy.deepcopy(samples), mode='loss')
    assert {'loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls'} <= set(losses)
    assert ('enc_loss_cls' in losses) == VARIANTS[variant]['as_two_stage']
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        cls_scores, boxes = model(inputs, copy.deepcopy(samples), mode='tensor')
        results = model(inputs, copy.deepcopy(samples), mode='predict')
    assert cls_scores.shape == (2, 2, 10, NUM_CLASSES) and boxes.shape == (2, 2, 10, 4)
    for sample, result in zip(samples, results):
        h, w = sample.img_shape
        bboxes = result.pred_instances.bboxes
        assert bboxes.shape == (10, 4)
        assert (bboxes >= 0).all() and (bboxes[:, 0::2] <= w).all() and (bboxes[:, 1::2] <= h).all()


def test_init_weights_keeps_the_star_init():
    torch.manual_seed(0)
    model = MODELS.build(tiny_detr_cfg())
    model.init_weights()
    attns = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    assert len(attns) == 4 and all(a.num_levels == 4 for a in attns)
    for attn in attns:
        assert not attn.sampling_offsets.weight.any() and not attn.attention_weights.weight.any()
        bias = attn.sampling_offsets.bias.view(4, 4, 2, 2)
        torch.testing.assert_close(bias[:, :, 1], 2 * bias[:, :, 0])
        torch.testing.assert_close(bias[0, 0, 0], torch.tensor([1., 0.]))


def test_two_stage_detector_never_selects_padding():
    """Give padded positions the best proposal scores: our top-k still avoids them."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_detr_cfg(**VARIANTS['refine-two-stage'])).eval()
    inputs, samples = make_batch()
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        enc_inputs, _ = model.pre_transformer(feats, samples)
        mask = enc_inputs['feat_mask']
        direction = torch.randn(256)
        direction -= direction.mean()
        model.memory_trans_fc.weight.copy_(torch.eye(256))
        model.memory_trans_fc.bias.zero_()
        head_cls = model.bbox_head.cls_branches[model.decoder.num_layers]
        head_cls.weight.zero_()
        head_cls.weight[0] = direction
        # valid memory points against the scoring direction: scores below the padded ones
        memory = -direction.expand(*mask.shape, 256) + 0.01 * torch.randn(*mask.shape, 256)
        dec_inputs, _ = model.pre_decoder(memory, mask, enc_inputs['spatial_shapes'])
        zeroed, _, _ = encoder_proposals(memory, mask, enc_inputs['spatial_shapes'])
        scores = head_cls(model.memory_trans_norm(model.memory_trans_fc(zeroed)))[..., 0]
    # an unmasked top-k, as in mmdet, would pick padded positions here
    assert mask[1].gather(0, scores[1].topk(model.num_queries)[1]).all()
    refs = dec_inputs['reference_points']  # (B, Nq, 4) selected proposal boxes
    assert torch.isfinite(refs).all() and (refs < 1).all()
    # the second image is padded; its proposals' centres stay in its valid area
    centre = refs[1, :, :2]
    assert (centre > 0).all() and (centre < 1).all()


def test_loss_falls_when_overfitting():
    torch.manual_seed(0)
    model = MODELS.build(tiny_detr_cfg(with_box_refine=True))
    model.init_weights()
    model.train()
    inputs, samples = make_batch(sizes=((64, 64), ))
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(15):
        total, _ = model.parse_losses(model.loss(inputs, copy.deepcopy(samples)))
        optim.zero_grad()
        total.backward()
        optim.step()
        history.append(total.item())
    assert sum(history[-3:]) / 3 < 0.6 * sum(history[:3]) / 3, history


def test_level_mismatch_is_a_clear_error():
    cfg = tiny_detr_cfg()
    cfg['decoder']['layer_cfg']['cross_attn_cfg']['num_levels'] = 3
    with pytest.raises(ValueError, match='num_feature_levels=4'):
        MODELS.build(cfg)
    model = MODELS.build(tiny_detr_cfg())
    inputs, samples = make_batch()
    feats = model.extract_feat(inputs)[:3]
    with pytest.raises(ValueError, match='expects 4'):
        model.pre_transformer(feats, samples)
