"""Every config under configs/ and projects/ loads, builds its model on CPU and runs a step.

Parametrized over the files found on disk, so new configs are covered automatically.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from tests.helpers import REPO_ROOT

CONFIG_DIRS = ('configs', 'projects')


def _config_files() -> list[str]:
    files = []
    for top in CONFIG_DIRS:
        for path in sorted((REPO_ROOT / top).rglob('*.py')):
            rel = path.relative_to(REPO_ROOT)
            parts = set(rel.parts)
            if '_base_' in parts or path.name == '__init__.py':
                continue
            # project code lives beside project configs; configs are in a `configs` folder
            if top == 'projects' and 'configs' not in parts:
                continue
            files.append(str(rel))
    return files


CONFIG_FILES = _config_files()


def _fake_batch(num_classes: int, with_mask: bool, large: bool) -> dict:
    from mmdet.testing import demo_mm_inputs
    shapes = [(3, 256, 320), (3, 224, 288)] if large else [(3, 64, 96), (3, 64, 80)]
    return demo_mm_inputs(batch_size=2, image_shapes=shapes, num_items=[3, 2],
                          num_classes=num_classes, with_mask=with_mask)


def _num_classes(model_cfg) -> int:
    for key in ('bbox_head', 'roi_head'):
        head = model_cfg.get(key)
        if head is None:
            continue
        if key == 'roi_head':
            bbox_head = head['bbox_head']
            bbox_head = bbox_head[0] if isinstance(bbox_head, list) else bbox_head
            return bbox_head['num_classes']
        return head['num_classes']
    raise ValueError('cannot find num_classes in the model config')


def _fewer_rois(model_cfg) -> None:
    """Sample 64 RoIs of at most 256 proposals per image in R-CNN training (mmdet: 512 of up
    to 2000): the step tests every module at a fraction of the cost of cascade box heads."""
    train_cfg = model_cfg.get('train_cfg') or {}
    if 'rpn_proposal' in train_cfg:
        train_cfg.rpn_proposal.update(nms_pre=256, max_per_img=256)
    stages = train_cfg.get('rcnn') or []
    for stage in stages if isinstance(stages, list) else [stages]:
        stage.sampler.num = 64


def _inner_model(model_cfg):
    """The detector config inside model wrappers (``WithDAttention``, ``WithDatDetMSDA``),
    which hold it under ``model``."""
    while isinstance(model_cfg.get('model'), dict):
        model_cfg = model_cfg['model']
    return model_cfg


def test_configs_are_found():
    assert 'configs/demo/fcos_r18-half_shapes.py' in CONFIG_FILES


@pytest.mark.parametrize('config', CONFIG_FILES)
def test_config_builds_and_trains_one_step(config):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.utils import import_modules_from_strings

    register_all_modules()
    cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    model_cfg = _inner_model(cfg.model)
    with_mask = bool(model_cfg.get('roi_head', {}).get('mask_head')) if isinstance(
        model_cfg.get('roi_head'), dict) else False
    # Pretrained weights cannot be fetched here; every other initialization runs as in training.
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.init_cfg = None
    _fewer_rois(model_cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    # YOLOX's batch resizing reads the runner's iteration from the message hub
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('iter', 0)
    # Query-based detectors (DETR family) need more encoder tokens than queries.
    query_based = 'num_queries' in model_cfg
    batch = _fake_batch(_num_classes(model_cfg), with_mask, large=query_based)
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), f'{config}: loss {total}'
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f'{config}: no parameter received a gradient'

    if 'roi_head' in model_cfg:
        return  # two-stage R-CNN inference at 1000 proposals is slow on CPU; mmdet tests it
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=False)
        results = model(**data, mode='predict')
    assert len(results) == 2 and all(r.pred_instances.bboxes.shape[-1] == 4 for r in results)


def test_project_configs_use_custom_imports():
    project_configs = [c for c in CONFIG_FILES if c.startswith('projects/')]
    for config in project_configs:
        cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
        assert cfg.get('custom_imports'), f'{config} does not declare custom_imports'


def test_every_config_dir_is_scanned():
    assert all(Path(REPO_ROOT, top).is_dir() for top in CONFIG_DIRS)
