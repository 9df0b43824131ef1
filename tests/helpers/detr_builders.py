"""Tiny ResNet-18/8 Deformable DETR and DINO configs in mmdet's schema (ours and mmdet's
detectors build from the same dict), and padded image batches with random boxes.

Importing this module registers mmdet's and dat_det's modules, which the configs name.
"""
import torch
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData

import dat_det.models  # noqa: F401

register_all_modules()

VARIANTS = {
    'multi-scale': dict(with_box_refine=False, as_two_stage=False),
    'refine': dict(with_box_refine=True, as_two_stage=False),
    'refine-two-stage': dict(with_box_refine=True, as_two_stage=True),
}
NUM_CLASSES = 3


def tiny_detr_cfg(with_box_refine=False, as_two_stage=False, detector='MSDADeformableDETR',
                  num_queries=10) -> dict:
    """A ResNet-18/8 + 2+2-layer Deformable DETR config in mmdet's schema, dropout off."""
    # mmdet's two-stage embeds proposals with a fixed 128 features per coordinate: 256 dims
    embed = 256 if as_two_stage else 32
    heads = 8 if as_two_stage else 4
    attn = dict(embed_dims=embed, num_heads=heads, num_points=2, dropout=0.0, batch_first=True)
    ffn = dict(embed_dims=embed, feedforward_channels=64, ffn_drop=0.0)
    return dict(
        type=detector, num_queries=num_queries, num_feature_levels=4,
        with_box_refine=with_box_refine, as_two_stage=as_two_stage,
        backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                      out_indices=(1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True),
        neck=dict(type='ChannelMapper', in_channels=[16, 32, 64], kernel_size=1,
                  out_channels=embed, act_cfg=None, norm_cfg=dict(type='GN', num_groups=8),
                  num_outs=4),
        encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(attn), ffn_cfg=dict(ffn))),
        decoder=dict(num_layers=2, return_intermediate=True, post_norm_cfg=None,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=embed, num_heads=heads,
                                                       dropout=0.0, batch_first=True),
                                    cross_attn_cfg=dict(attn), ffn_cfg=dict(ffn))),
        positional_encoding=dict(num_feats=embed // 2, normalize=True, offset=-0.5),
        bbox_head=dict(
            type='DeformableDETRHead', num_classes=NUM_CLASSES, embed_dims=embed,
            sync_cls_avg_factor=True,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=2.0),
            loss_bbox=dict(type='L1Loss', loss_weight=5.0),
            loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
        test_cfg=dict(max_per_img=num_queries))


def make_batch(sizes=((64, 80), (48, 56)), seed=0):
    """Images ``(B, 3, H, W)`` padded to the largest size, and their data samples."""
    gen = torch.Generator().manual_seed(seed)
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    inputs = torch.zeros(len(sizes), 3, height, width)
    samples = []
    for i, (h, w) in enumerate(sizes):
        inputs[i, :, :h, :w] = torch.randn(3, h, w, generator=gen)
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(height, width), scale_factor=(1., 1.),
                                             batch_input_shape=(height, width)))
        xy = torch.rand(2, 2, generator=gen) * torch.tensor([w, h]) * 0.5
        wh = (torch.rand(2, 2, generator=gen) * 0.4 + 0.1) * torch.tensor([w, h])
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, NUM_CLASSES, (2, ), generator=gen))
        samples.append(sample)
    return inputs, samples


NUM_QUERIES = 10
EMBED = 256  # mmdet's DINO decoder encodes boxes with a fixed 128 features per coordinate


def tiny_dino_cfg(detector: str = 'MSDADINO', embed: int = EMBED, num_dn_queries: int = 8,
                  num_layers: int = 2) -> dict:
    """A ResNet-18/8 + 2+2-layer DINO config in mmdet's schema, dropout off."""
    heads = 8
    attn = dict(embed_dims=embed, num_heads=heads, num_levels=4, num_points=2, dropout=0.0,
                batch_first=True)
    ffn = dict(embed_dims=embed, feedforward_channels=64, ffn_drop=0.0)
    return dict(
        type=detector, num_queries=NUM_QUERIES, num_feature_levels=4, with_box_refine=True,
        as_two_stage=True,
        backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                      out_indices=(1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True),
        neck=dict(type='ChannelMapper', in_channels=[16, 32, 64], kernel_size=1,
                  out_channels=embed, act_cfg=None, norm_cfg=dict(type='GN', num_groups=8),
                  num_outs=4),
        encoder=dict(num_layers=num_layers,
                     layer_cfg=dict(self_attn_cfg=dict(attn), ffn_cfg=dict(ffn))),
        decoder=dict(num_layers=num_layers, return_intermediate=True, post_norm_cfg=None,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=embed, num_heads=heads,
                                                       dropout=0.0, batch_first=True),
                                    cross_attn_cfg=dict(attn), ffn_cfg=dict(ffn))),
        positional_encoding=dict(num_feats=embed // 2, normalize=True, offset=0.0,
                                 temperature=20),
        bbox_head=dict(
            type='DINOHead', num_classes=NUM_CLASSES, embed_dims=embed,
            sync_cls_avg_factor=True,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=5.0),
            loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None,
                                   num_dn_queries=num_dn_queries)),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
        test_cfg=dict(max_per_img=NUM_QUERIES))
