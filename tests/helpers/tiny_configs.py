"""Tiny random DAT + Deformable DETR / DINO configs on the shapes data, and checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import REPO_ROOT

DDETR_CONFIG = REPO_ROOT / 'configs' / 'deformable_detr' / 'deformable-detr_r50_16xb2-50e_coco.py'
DINO_CONFIG = REPO_ROOT / 'configs' / 'dino' / 'dino-4scale_r50_8xb2-12e_coco.py'
TINY_DAT = dict(
    type='DAT', arch='dat++-t', dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
    groups=[1, 2, 2, 4], depths=[2, 2, 2, 2],
    stage_spec=[['N', 'D'], ['N', 'D'], ['N', 'D'], ['D', 'D']], drop_path_rate=0.0,
    out_indices=(1, 2, 3), init_cfg=None)


def tiny_ddetr_model(with_box_refine: bool = False, as_two_stage: bool = False,
                     num_feature_levels: int = 4) -> dict:
    """The Deformable DETR recipe's model with a DAT++ of 16-128 channels, 2+2 layers, 32 dims.

    ``num_feature_levels=1`` is the single-scale variant (the last backbone stage only).
    """
    from mmengine.config import Config

    model = Config.fromfile(str(DDETR_CONFIG)).model.to_dict()
    attn = dict(embed_dims=32, num_heads=4, num_levels=num_feature_levels, num_points=2,
                batch_first=True)
    ffn = dict(embed_dims=32, feedforward_channels=64, ffn_drop=0.0)
    single_scale = num_feature_levels == 1
    model.update(num_queries=20, with_box_refine=with_box_refine, as_two_stage=as_two_stage,
                 num_feature_levels=num_feature_levels,
                 backbone=dict(TINY_DAT, out_indices=(3, ) if single_scale else (1, 2, 3)),
                 test_cfg=dict(max_per_img=20))
    model['neck'].update(in_channels=[128] if single_scale else [32, 64, 128], out_channels=32,
                         num_outs=num_feature_levels, norm_cfg=dict(type='GN', num_groups=8))
    model['encoder'] = dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn))
    model['decoder'].update(num_layers=2, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=32, num_heads=4, dropout=0.0, batch_first=True),
        cross_attn_cfg=attn, ffn_cfg=ffn))
    model['positional_encoding'].update(num_feats=16)
    model['bbox_head'].update(num_classes=5, embed_dims=32)
    return model


def tiny_dino_model(embed_dims: int = 32) -> dict:
    """The DINO recipe's model with the tiny DAT++, 2+2 layers, 20 queries, 10 denoising
    queries; ``embed_dims=256`` for comparisons with mmdet's DINO (which needs 256)."""
    from mmengine.config import Config

    model = Config.fromfile(str(DINO_CONFIG)).model.to_dict()
    heads = 8 if embed_dims >= 256 else 4
    attn = dict(embed_dims=embed_dims, num_heads=heads, num_levels=4, num_points=2,
                dropout=0.0)
    ffn = dict(embed_dims=embed_dims, feedforward_channels=64, ffn_drop=0.0)
    model.update(num_queries=20, backbone=dict(TINY_DAT), test_cfg=dict(max_per_img=20),
                 dn_cfg=dict(model['dn_cfg'], group_cfg=dict(dynamic=True, num_groups=None,
                                                             num_dn_queries=10)))
    model['neck'].update(in_channels=[32, 64, 128], out_channels=embed_dims,
                         norm_cfg=dict(type='GN', num_groups=8))
    model['encoder'] = dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn))
    model['decoder'].update(num_layers=2, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=embed_dims, num_heads=heads, dropout=0.0),
        cross_attn_cfg=attn, ffn_cfg=ffn))
    model['positional_encoding'].update(num_feats=embed_dims // 2)
    model['bbox_head'].update(num_classes=5, embed_dims=embed_dims)
    return model


def tiny_ddetr_config(root: Path, data_root: Path, with_box_refine: bool = False,
                      as_two_stage: bool = False, num_feature_levels: int = 4,
                      model: dict | None = None, name: str | None = None) -> Path:
    """Write a config of :func:`tiny_ddetr_model` (or of ``model``, e.g.
    :func:`tiny_dino_model`, named ``name``) on the shapes dataset at ``data_root``."""
    runtime = 'mmdet::_base_/default_runtime.py'
    shapes = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'shapes_detection.py'
    text = f"""
_base_ = ['{shapes}', '{runtime}']
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)
data_root = '{data_root}/'
model = {model or tiny_ddetr_model(with_box_refine, as_two_stage, num_feature_levels)!r}
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=0.1, norm_type=2))
default_hooks = dict(logger=dict(interval=1))
"""
    name = name or 'tiny_ddetr' + ('_single-scale' if num_feature_levels == 1 else '') + (
        '_refine' if with_box_refine else '') + ('_twostage' if as_two_stage else '')
    path = root / f'{name}.py'
    path.write_text(text)
    return path


def random_checkpoint(config: Path, out: Path, seed: int = 0) -> Path:
    """Save the weights of a freshly built (and initialized) model of ``config``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(str(config)).model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, out)
    return out
