"""DAT-Detection (mmdet 2.x) COCO checkpoints -> the configs/dat detectors: checkpoints laid
out as the authors' (tests/helpers/dat_detection_official.py), filled with random values, are
converted and loaded."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmdet')

from dat_det.models.checkpoint import (  # noqa: E402
    convert_dat_detection,
    load_dat_detection,
    match_to_model,
    rename_dat_detection_key,
)
from dat_det.utils.errors import UserInputError  # noqa: E402
from tests.helpers.dat_detection_official import (  # noqa: E402
    OFFICIAL,
    T_MODELS,
    build_detector,
    fingerprint,
    official_checkpoint,
)


@pytest.fixture(scope='module')
def detectors() -> dict:
    return {name: build_detector(OFFICIAL['models'][name]['config']) for name in T_MODELS}


@pytest.mark.parametrize('name', list(OFFICIAL['models']))
def test_published_config_has_the_official_tensors(name):
    """Each published config builds the authors' detector: same tensor names and shapes."""
    expected = OFFICIAL['models'][name]
    model = build_detector(expected['config'])
    assert fingerprint(model) == {k: expected[k] for k in ('num_tensors', 'num_elements',
                                                             'sha256')}


@pytest.mark.parametrize('name', T_MODELS)
def test_every_official_tensor_lands_in_its_parameter(name, detectors):
    model = detectors[name]
    checkpoint = official_checkpoint(name)
    loaded = load_dat_detection(model, checkpoint)
    official = checkpoint['state_dict']
    assert len(loaded) == len(official) == len(model.state_dict())
    ours = model.state_dict()
    for key, value in official.items():
        assert torch.equal(ours[rename_dat_detection_key(key)], value), key
    # spot checks of where the heads land
    params = dict(model.named_parameters())
    if name.startswith('cmrcn'):
        assert torch.equal(params['roi_head.bbox_head.2.shared_convs.3.conv.weight'],
                           official['roi_head.bbox_head.2.shared_convs.3.conv.weight'])
        assert torch.equal(model.roi_head.mask_head[1].conv_logits.bias,
                           official['roi_head.mask_head.1.conv_logits.bias'])
    elif name.startswith('mrcn'):
        assert torch.equal(model.neck.fpn_convs[4].conv.weight,
                           official['neck.fpn_convs.4.conv.weight'])
        assert torch.equal(model.rpn_head.rpn_cls.weight, official['rpn_head.rpn_cls.weight'])
    else:
        assert torch.equal(model.bbox_head.retina_cls.weight,
                           official['bbox_head.retina_cls.weight'])
    assert torch.equal(model.backbone.stages[2].attns[17].rpe_table,
                       official['backbone.stages.2.attns.17.rpe_table'])


def test_converted_model_predicts_like_the_checkpoint_values(detectors):
    """A conversion that only renames: loading the same tensors twice gives the same model."""
    model = detectors['rtn_tiny_1x_4n_dp00_lr2']
    checkpoint = official_checkpoint('rtn_tiny_1x_4n_dp00_lr2', seed=3)
    load_dat_detection(model, checkpoint)
    model.eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = [t.clone() for t in model.bbox_head(model.neck(model.backbone(x)))[0]]
        load_dat_detection(model, official_checkpoint('rtn_tiny_1x_4n_dp00_lr2', seed=4))
        other = model.bbox_head(model.neck(model.backbone(x)))[0]
        load_dat_detection(model, checkpoint)
        again = model.bbox_head(model.neck(model.backbone(x)))[0]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not any(torch.allclose(a, b) for a, b in zip(first, other))


def test_leftover_tensor_is_an_error(detectors):
    model = detectors['mrcn_tiny_1x_4n_dp00_lr4']
    checkpoint = official_checkpoint('mrcn_tiny_1x_4n_dp00_lr4')
    checkpoint['state_dict']['roi_head.bbox_head.shared_fcs.2.weight'] = torch.zeros(3)
    with pytest.raises(UserInputError) as err:
        load_dat_detection(model, checkpoint, source='ckpt.pth')
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith('ckpt.pth does not match the model: 1 tensors the model does not '
                              'use: roi_head.bbox_head.shared_fcs.2.weight')


def test_missing_tensor_is_an_error(detectors):
    """The FPN P6 conv that a max-pooling neck (mmdet's Mask R-CNN base) would not have."""
    model = detectors['mrcn_tiny_1x_4n_dp00_lr4']
    checkpoint = official_checkpoint('mrcn_tiny_1x_4n_dp00_lr4')
    for suffix in ('weight', 'bias'):
        del checkpoint['state_dict'][f'neck.fpn_convs.4.conv.{suffix}']
    with pytest.raises(UserInputError, match=r'2 tensors the model needs are missing: '
                                             r'neck\.fpn_convs\.4\.conv\.weight, '
                                             r'neck\.fpn_convs\.4\.conv\.bias'):
        load_dat_detection(model, checkpoint)


def test_a_checkpoint_of_another_detector_is_refused(detectors):
    checkpoint = official_checkpoint('mrcn_tiny_1x_4n_dp00_lr4')
    with pytest.raises(UserInputError, match=r'tensors the model does not use: .*roi_head.*; '
                                             r'\d+ tensors the model needs are missing: '
                                             r'.*bbox_head\.'):
        load_dat_detection(detectors['rtn_tiny_1x_4n_dp00_lr2'], checkpoint)


def test_shape_mismatch_is_an_error(detectors):
    """E.g. a deformable position table of another pre-training size: no silent resizing."""
    checkpoint = official_checkpoint('rtn_tiny_1x_4n_dp00_lr2')
    key = 'backbone.stages.0.attns.1.rpe_table'
    checkpoint['state_dict'][key] = torch.zeros(2, 63, 63)
    with pytest.raises(UserInputError, match=r'1 tensors of another shape \(checkpoint vs '
                                             r'model\): backbone\.stages\.0\.attns\.1\.'
                                             r'rpe_table \(2, 63, 63\) vs \(2, 111, 111\)'):
        load_dat_detection(detectors['rtn_tiny_1x_4n_dp00_lr2'], checkpoint)


def test_long_key_lists_are_shortened():
    target = {f'a.{i}': torch.zeros(1) for i in range(20)}
    with pytest.raises(UserInputError, match=r'20 tensors the model needs are missing: '
                                             r'a\.0, a\.1, .*a\.7, \.\.\. \(12 more\)'):
        match_to_model({}, target)


def test_module_prefix_layer_scale_and_recomputed_buffers():
    """``module.`` goes, DAT-Detection's LayerScale ``gamma`` becomes ``weight``, buffers we
    recompute are dropped, and only those: other leftovers still fail."""
    from dat_det.models.backbones import DAT
    from tests.helpers.tiny_configs import TINY_DAT

    backbone_cfg = dict(TINY_DAT, layer_scale_values=[0.5] * 4)
    backbone_cfg.pop('type')
    model = torch.nn.Module()
    model.backbone = DAT(**backbone_cfg)
    gen = torch.Generator().manual_seed(1)
    official = {}
    for key, value in model.state_dict().items():
        if '.layer_scales.' in key:
            key = key[:-len('weight')] + 'gamma'
        official['module.' + key] = torch.randn(value.shape, generator=gen)
    assert sum(k.endswith('.gamma') for k in official) == 2 * sum(TINY_DAT['depths'])
    official['module.backbone.stages.0.attns.0.relative_position_index'] = torch.zeros(9, 9)
    loaded = load_dat_detection(model, dict(state_dict=official))
    assert len(loaded) == len(official) - 1
    for key, value in official.items():
        if not key.endswith('relative_position_index'):
            assert torch.equal(model.state_dict()[rename_dat_detection_key(key)], value), key
    assert rename_dat_detection_key('backbone.stages.1.layer_scales.3.gamma') == \
        'backbone.stages.1.layer_scales.3.weight'
    # a recomputed buffer's name outside the backbone is not dropped
    official['module.neck.relative_position_index'] = torch.zeros(1)
    with pytest.raises(UserInputError, match='does not use: neck.relative_position_index'):
        load_dat_detection(model, dict(state_dict=official))


def test_two_keys_converting_to_one_name_is_an_error():
    with pytest.raises(UserInputError, match="'module.neck.w' and 'neck.w' both convert"):
        convert_dat_detection({'module.neck.w': torch.zeros(1), 'neck.w': torch.zeros(1)})
