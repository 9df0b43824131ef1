# Deformable DETR with a DAT-T backbone (C3-C5 of the ImageNet-1k pre-trained model),
# otherwise the ResNet-50 recipe. Place the official ImageNet checkpoint at
# checkpoints/dat_tiny_in1k_224.pth (or override model.backbone.init_cfg.checkpoint).
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat-t',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_tiny_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768]))
