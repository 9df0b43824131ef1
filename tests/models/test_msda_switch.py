"""The WithDatDetMSDA switch: mmdet's own DINO and Mask2Former give the same outputs, losses
and gradients before and after it, from the same state dict; the backend choice reaches the op."""
import copy
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')

import mmdet  # noqa: E402
from mmcv.ops import MultiScaleDeformableAttention  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402

from dat_det.models import DatDetMSDA  # noqa: E402
from tests.helpers.detr_builders import make_batch, tiny_dino_cfg  # noqa: E402

register_all_modules()

MASK2FORMER_CONFIG = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'mask2former',
                              'mask2former_r50_8xb2-lsj-50e_coco-panoptic.py')


def perturbed(model):
    """Move every parameter off its init so that zero-initialised paths count."""
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def switched_pair(model_cfg, **switch):
    """mmdet's model (perturbed) and the same config behind the switch, same state dict."""
    torch.manual_seed(0)
    original = perturbed(MODELS.build(copy.deepcopy(model_cfg)))
    converted = MODELS.build(dict(type='WithDatDetMSDA', model=copy.deepcopy(model_cfg),
                                  **switch))
    converted.load_state_dict(original.state_dict(), strict=True)
    assert list(converted.state_dict()) == list(original.state_dict())
    attns = [m for m in converted.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert attns and all(type(m) is DatDetMSDA for m in attns)
    assert not any(type(m) is DatDetMSDA for m in original.modules())
    return original, converted


def assert_same_training(original, converted, loss_fn, seed=1):
    """Equal losses (random draws seeded alike) and equal gradients of every parameter."""
    grads = []
    for model in (original, converted):
        model.train()
        torch.manual_seed(seed)
        losses = loss_fn(model)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
        if model is original:
            expected = losses
    assert losses.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], atol=1e-4, rtol=1e-4, msg=key)
    assert grads[0].keys() == grads[1].keys()
    assert any('sampling_offsets' in k for k in grads[0])
    for key, grad in grads[1].items():
        torch.testing.assert_close(grad, grads[0][key], atol=1e-4, rtol=1e-3, msg=key)


def test_dino_equal_before_and_after_the_switch():
    original, converted = switched_pair(tiny_dino_cfg(detector='DINO'))
    inputs, samples = make_batch()
    for model in (original, converted):
        model.eval()
    with torch.no_grad():
        expected = original.predict(inputs, copy.deepcopy(samples))
        results = converted.predict(inputs, copy.deepcopy(samples))
    for exp, res in zip(expected, results):
        torch.testing.assert_close(res.pred_instances.scores, exp.pred_instances.scores,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.pred_instances.bboxes, exp.pred_instances.bboxes,
                                   atol=1e-4, rtol=1e-4)
    assert_same_training(original, converted,
                         lambda model: model.loss(inputs, copy.deepcopy(samples)))


def tiny_mask2former_cfg() -> dict:
    """mmdet's panoptic Mask2Former config with a ResNet-18/8, 32 channels, 1+2 layers."""
    cfg = Config.fromfile(MASK2FORMER_CONFIG).model.to_dict()
    cfg['data_preprocessor'].pop('batch_augments')
    cfg['backbone'].update(depth=18, base_channels=8, init_cfg=None)
    head = cfg['panoptic_head']
    things, stuff = 2, 1
    head.update(in_channels=[8, 16, 32, 64], feat_channels=32, out_channels=32,
                num_things_classes=things, num_stuff_classes=stuff, num_queries=5)
    head['loss_cls']['class_weight'] = [1.0] * (things + stuff) + [0.1]
    encoder = head['pixel_decoder']['encoder']
    encoder['num_layers'] = 1
    encoder['layer_cfg']['self_attn_cfg'].update(embed_dims=32, num_heads=4, num_points=2)
    encoder['layer_cfg']['ffn_cfg'].update(embed_dims=32, feedforward_channels=64)
    head['pixel_decoder']['norm_cfg']['num_groups'] = 8
    head['pixel_decoder']['positional_encoding']['num_feats'] = 16
    head['positional_encoding']['num_feats'] = 16
    decoder = head['transformer_decoder']
    decoder['num_layers'] = 2
    for key in ('self_attn_cfg', 'cross_attn_cfg'):
        decoder['layer_cfg'][key].update(embed_dims=32, num_heads=4)
    decoder['layer_cfg']['ffn_cfg'].update(embed_dims=32, feedforward_channels=64)
    cfg['panoptic_fusion_head'].update(num_things_classes=things, num_stuff_classes=stuff)
    cfg['train_cfg']['num_points'] = 64
    cfg['test_cfg']['max_per_image'] = 5
    return ConfigDict(cfg)  # MaskFormer calls ConfigDict methods on its head config


def test_mask2former_equal_before_and_after_the_switch():
    original, converted = switched_pair(tiny_mask2former_cfg())
    torch.manual_seed(0)
    batch = demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64), (3, 48, 56)],
                           num_items=[2, 1], num_classes=3, with_mask=True, with_semantic=True)
    data = original.data_preprocessor(batch, training=True)
    inputs, samples = data['inputs'], data['data_samples']
    for model in (original, converted):
        model.eval()
    with torch.no_grad():
        expected = original._forward(inputs, copy.deepcopy(samples))
        outputs = converted._forward(inputs, copy.deepcopy(samples))
    for exp, out in zip(expected, outputs):  # class scores and masks of every layer
        for e, o in zip(exp, out):
            torch.testing.assert_close(o, e, atol=1e-4, rtol=1e-4)
    assert_same_training(original, converted,
                         lambda model: model.loss(inputs, copy.deepcopy(samples)))


def test_backend_choice_reaches_the_op(monkeypatch):
    """``msda_backend`` and, without it, ``DAT_DET_MSDA_BACKEND`` choose the op's backend."""
    inputs, samples = make_batch()
    cfg = tiny_dino_cfg(detector='DINO', num_layers=1)
    model = MODELS.build(dict(type='WithDatDetMSDA', model=copy.deepcopy(cfg),
                              msda_backend='bogus')).eval()
    with pytest.raises(ValueError, match="backend='bogus'"), torch.no_grad():
        model.predict(inputs, copy.deepcopy(samples))
    model = MODELS.build(dict(type='WithDatDetMSDA', model=copy.deepcopy(cfg))).eval()
    monkeypatch.setenv('DAT_DET_MSDA_BACKEND', 'bogus')
    with pytest.raises(ValueError, match="DAT_DET_MSDA_BACKEND='bogus'"), torch.no_grad():
        model.predict(inputs, copy.deepcopy(samples))
    monkeypatch.setenv('DAT_DET_MSDA_BACKEND', 'pytorch')
    with torch.no_grad():
        assert len(model.predict(inputs, copy.deepcopy(samples))) == 2


def test_switch_refuses_a_model_without_deformable_attention():
    cfg = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18, base_channels=8),
               neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5),
               bbox_head=dict(type='RetinaHead', num_classes=2, in_channels=16,
                              feat_channels=16,
                              anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                                    scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                                    strides=[8, 16, 32, 64, 128]),
                              bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                              loss_cls=dict(type='FocalLoss', use_sigmoid=True),
                              loss_bbox=dict(type='L1Loss')))
    with pytest.raises(ValueError, match='has no mmcv MultiScaleDeformableAttention'):
        MODELS.build(dict(type='WithDatDetMSDA', model=cfg))
