"""The configs of the published DAT++ COCO detectors hold DAT-Detection's settings, and
tools/model_converters/dat_detection2datdet.py converts a checkpoint for them.

The expected values are those of the authors' mmdet 2.26 configs (DAT-Detection, configs/dat
and configs/_base_): test scale, normalisation, test thresholds, heads, and the recipe.
"""
from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402

from tests.helpers.dat_detection_official import (  # noqa: E402
    CONFIG_DIR,
    OFFICIAL,
    build_detector,
    official_checkpoint,
)
from tests.helpers.tool_runs import run_tool  # noqa: E402

DIMS = {'dat++-t': [64, 128, 256, 512], 'dat++-s': [96, 192, 384, 768],
        'dat++-b': [128, 256, 512, 1024]}
PRETRAINED = {'dat++-t': 'tiny', 'dat++-s': 'small', 'dat++-b': 'base'}


def _published(kind, arch, drop_path, schedule, amp=True, batch=2):
    return dict(kind=kind, arch=arch, drop_path=drop_path, schedule=schedule, amp=amp,
                batch=batch)


# DAT-Detection config -> (our config, facts of theirs)
PUBLISHED = {
    'rtn_tiny_1x_4n_dp00_lr2': _published('retinanet', 'dat++-t', 0.0, '1x'),
    'rtn_tiny_3x_4n_dp02_lr2': _published('retinanet', 'dat++-t', 0.2, '3x'),
    'rtn_small_1x_4n_dp01_lr2': _published('retinanet', 'dat++-s', 0.1, '1x'),
    'rtn_small_3x_4n_dp05_lr2': _published('retinanet', 'dat++-s', 0.5, '3x'),
    'mrcn_tiny_1x_4n_dp00_lr4': _published('mask', 'dat++-t', 0.0, '1x'),
    'mrcn_tiny_3x_4n_dp03_lr4': _published('mask', 'dat++-t', 0.3, '3x'),
    'mrcn_small_1x_4n_dp01_lr4': _published('mask', 'dat++-s', 0.1, '1x'),
    'mrcn_small_3x_4n_dp05_lr4': _published('mask', 'dat++-s', 0.5, '3x'),
    'cmrcn_tiny_1x_4n_dp00_lr4': _published('cascade', 'dat++-t', 0.0, '1x'),
    'cmrcn_tiny_3x_4n_dp01_lr4': _published('cascade', 'dat++-t', 0.1, '3x'),
    'cmrcn_small_3x_4n_dp05_lr4': _published('cascade', 'dat++-s', 0.5, '3x', amp=False),
    'cmrcn_base_3x_8n_dp08_lr4': _published('cascade', 'dat++-b', 0.8, '3x', amp=False,
                                            batch=1),
}
RCNN_TEST_CFG = dict(
    rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
             min_bbox_size=0),
    rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
              mask_thr_binary=0.5))
RETINANET_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                          nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
MS_CROP_SIDES = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]


@functools.cache
def load(name: str) -> Config:
    """Our config of DAT-Detection's model ``name`` (cached: tests only read it)."""
    return Config.fromfile(str(CONFIG_DIR / OFFICIAL['models'][name]['config']))


def test_every_published_model_has_a_config():
    assert set(PUBLISHED) == set(OFFICIAL['models'])
    assert all((CONFIG_DIR / m['config']).is_file() for m in OFFICIAL['models'].values())


@pytest.mark.parametrize('name', list(PUBLISHED))
def test_backbone_and_neck(name):
    facts, cfg = PUBLISHED[name], load(name)
    backbone, neck = cfg.model.backbone, cfg.model.neck
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == \
        ('DAT', facts['arch'], facts['drop_path'])
    assert backbone.pretrain_img_size == 224 and backbone.with_cp  # their use_checkpoint
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f"checkpoints/dat_pp_{PRETRAINED[facts['arch']]}_in1k_224.pth")
    dims = DIMS[facts['arch']]
    assert (neck.type, neck.out_channels, neck.num_outs) == ('FPN', 256, 5)
    if facts['kind'] == 'retinanet':
        # theirs: in_channels=dims, start_level=1 with stage 0 un-normed and unused; the same
        # modules and outputs as stages 1-3 from start_level 0
        assert tuple(backbone.out_indices) == (1, 2, 3)
        assert (neck.in_channels, neck.start_level, neck.add_extra_convs) == \
            (dims[1:], 0, 'on_input')
    else:
        assert tuple(backbone.out_indices) == (0, 1, 2, 3)
        assert neck.in_channels == dims and neck.get('start_level', 0) == 0
        expected_extra = 'on_input' if facts['kind'] == 'mask' else False
        assert neck.get('add_extra_convs', False) == expected_extra


@pytest.mark.parametrize('name', list(PUBLISHED))
def test_test_settings(name):
    facts, cfg = PUBLISHED[name], load(name)
    pre = cfg.model.data_preprocessor
    assert pre.mean == [123.675, 116.28, 103.53] and pre.std == [58.395, 57.12, 57.375]
    assert pre.bgr_to_rgb and pre.pad_size_divisor == 32
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [step['type'] for step in pipeline] == [
        'LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs']
    assert tuple(pipeline[1].scale) == (1333, 800) and pipeline[1].keep_ratio
    assert cfg.test_dataloader.batch_size == 1
    if facts['kind'] == 'retinanet':
        assert cfg.model.test_cfg == RETINANET_TEST_CFG
        assert cfg.test_evaluator.metric == 'bbox'
    else:
        assert cfg.model.test_cfg == RCNN_TEST_CFG
        assert cfg.test_evaluator.metric == ['bbox', 'segm']


@pytest.mark.parametrize('name', [n for n in PUBLISHED if PUBLISHED[n]['kind'] == 'cascade'])
def test_cascade_heads(name):
    roi = load(name).model.roi_head
    assert roi.type == 'CascadeRoIHead' and roi.stage_loss_weights == [1, 0.5, 0.25]
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    for head, target_stds in zip(roi.bbox_head, stds):
        assert (head.type, head.num_shared_convs, head.num_shared_fcs, head.conv_out_channels,
                head.fc_out_channels) == ('ConvFCBBoxHead', 4, 1, 256, 1024)
        assert head.norm_cfg == dict(type='SyncBN', requires_grad=True)
        assert not head.reg_class_agnostic and head.reg_decoded_bbox
        assert head.bbox_coder.target_stds == target_stds
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.loss_cls == dict(type='CrossEntropyLoss', use_sigmoid=False,
                                     loss_weight=1.0)
    assert (roi.mask_head.type, roi.mask_head.num_convs) == ('FCNMaskHead', 4)
    model = load(name).model
    assert model.rpn_head.loss_bbox == dict(type='SmoothL1Loss', beta=1.0 / 9.0,
                                            loss_weight=1.0)
    assert model.train_cfg.rpn_proposal.max_per_img == 2000
    assert [s.assigner.pos_iou_thr for s in model.train_cfg.rcnn] == [0.5, 0.6, 0.7]


@pytest.mark.parametrize('name', [n for n in PUBLISHED if PUBLISHED[n]['kind'] == 'mask'])
def test_mask_rcnn_heads(name):
    model = load(name).model
    head = model.roi_head.bbox_head
    assert (head.type, head.reg_class_agnostic) == ('Shared2FCBBoxHead', False)
    assert head.loss_bbox == dict(type='L1Loss', loss_weight=1.0)
    assert model.rpn_head.loss_bbox == dict(type='L1Loss', loss_weight=1.0)
    assert model.train_cfg.rpn_proposal.max_per_img == 1000
    assert model.train_cfg.rcnn.assigner.match_low_quality


@pytest.mark.parametrize('name', list(PUBLISHED))
def test_training_recipe(name):
    facts, cfg = PUBLISHED[name], load(name)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == ('AmpOptimWrapper' if facts['amp'] else 'OptimWrapper')
    assert 'clip_grad' not in wrapper and 'loss_scale' not in wrapper  # dynamic by default
    lr = 2e-4 if facts['kind'] == 'retinanet' else 4e-4
    assert wrapper.optimizer == dict(type='AdamW', lr=lr, betas=(0.9, 0.999),
                                     weight_decay=0.05)
    assert wrapper.paramwise_cfg == dict(norm_decay_mult=0.0, custom_keys={
        key: dict(decay_mult=0.0) for key in (
            'absolute_pos_embed', 'relative_position_bias_table', 'rpe_table', 'norm')})
    epochs, milestones = (12, [8, 11]) if facts['schedule'] == '1x' else (36, [27, 33])
    assert cfg.train_cfg.max_epochs == epochs
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.by_epoch, warmup.end) == \
        ('LinearLR', 0.001, False, 500)
    assert (steps.type, steps.milestones, steps.end, steps.gamma) == \
        ('MultiStepLR', milestones, epochs, 0.1)
    # 64 images per batch as the authors trained (32 GPUs x 2, DAT++-B 64 x 1)
    assert cfg.train_dataloader.batch_size == facts['batch']
    assert cfg.train_dataloader.num_workers == facts['batch']
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=64)
    # the multi-scale + crop augmentation, for 1x and 3x alike
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline == cfg.train_pipeline
    assert [s['type'] for s in pipeline] == ['LoadImageFromFile', 'LoadAnnotations',
                                             'RandomFlip', 'RandomChoice', 'PackDetInputs']
    assert pipeline[1].get('with_mask', False) == (facts['kind'] != 'retinanet')
    assert pipeline[2].prob == 0.5
    resize, (small, crop, again) = pipeline[3].transforms
    assert [s[0] for s in resize[0].scales] == MS_CROP_SIDES
    assert all(s[1] == 1333 for s in resize[0].scales) and resize[0].keep_ratio
    assert [s[0] for s in small.scales] == [400, 500, 600]
    assert (crop.type, crop.crop_type, tuple(crop.crop_size), crop.allow_negative_crop) == \
        ('RandomCrop', 'absolute_range', (384, 600), True)
    assert again.scales == resize[0].scales


def test_weight_decay_groups_as_the_authors():
    """No decay on norm layers and on names containing a custom key; the natten ``rpb`` and
    biases keep weight decay, as in DAT-Detection."""
    from mmengine.optim import build_optim_wrapper

    cfg = load('mrcn_tiny_1x_4n_dp00_lr4')
    model = build_detector(OFFICIAL['models']['mrcn_tiny_1x_4n_dp00_lr4']['config'])
    wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    assert len(decay) == len(names)
    for name, value in decay.items():
        expected = 0.0 if ('norm' in name or 'rpe_table' in name) else 0.05
        assert value == expected, name
    assert decay['backbone.stages.0.attns.0.rpb'] == 0.05
    assert decay['backbone.stages.0.attns.1.proj_q.bias'] == 0.05
    assert decay['backbone.stages.2.attns.3.rpe_table'] == 0.0
    assert decay['backbone.down_projs.0.1.norm.weight'] == 0.0


def test_converter_tool_writes_the_model_state_dict(tmp_path):
    name = 'rtn_tiny_1x_4n_dp00_lr2'
    config = str(CONFIG_DIR / OFFICIAL['models'][name]['config'])
    official = official_checkpoint(name, seed=5)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(official, src)
    proc = run_tool('model_converters/dat_detection2datdet.py', config, str(src), str(dst))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'627 tensors of {src} match {config}; saved to {dst}' in proc.stdout
    converted = torch.load(dst, map_location='cpu', weights_only=False)
    assert converted['meta'] == dict(dataset_meta=dict(classes=list(official['meta']['CLASSES'])))
    model = build_detector(OFFICIAL['models'][name]['config'])
    assert list(converted['state_dict']) == list(model.state_dict())
    model.load_state_dict(converted['state_dict'], strict=True)
    for key, value in official['state_dict'].items():
        assert torch.equal(model.state_dict()[key], value), key

    torch.save(official_checkpoint('mrcn_tiny_1x_4n_dp00_lr4'), src)
    proc = run_tool('model_converters/dat_detection2datdet.py', config, str(src),
                    str(tmp_path / 'wrong.pth'))
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f'error: {src} does not match the model: ')
    assert 'roi_head.' in line and line.endswith('(is it the config of this checkpoint?)')
    assert not (tmp_path / 'wrong.pth').exists()
