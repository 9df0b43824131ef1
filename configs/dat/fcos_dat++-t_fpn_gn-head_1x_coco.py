# FCOS (GN head) with DAT++-T: mmdet's FCOS 1x recipe with ImageNet RGB normalisation and
# AdamW with DAT++'s weight-decay rules. Not a model of the authors; no official weights.
# Weights: official DAT++-T ImageNet-1k checkpoint at checkpoints/dat_pp_tiny_in1k_224.pth.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat++-t',
        pretrain_img_size=224,
        drop_path_rate=0.0,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512], start_level=0))

# 16 images per batch (mmdet's 8 GPUs x 2); mmdet's gradient clipping is kept
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        custom_keys={key: dict(decay_mult=0.0) for key in (
            'absolute_pos_embed', 'relative_position_bias_table', 'rpe_table', 'norm')}))
