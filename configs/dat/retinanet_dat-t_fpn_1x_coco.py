# RetinaNet with a DAT-T backbone, 1x schedule.
# Drop path 0.2: Swin-style rate, no published DAT recipe.
# Recipe of the authors (DAT-Detection): configs/_base_/schedules/dat_adamw_1x.py.
# Weights: the official ImageNet-1k checkpoint (github.com/LeapLabTHU/DAT, README), saved as
# checkpoints/dat_tiny_in1k_224.pth; set init_cfg=None to train from scratch.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/dat_adamw_1x.py', 'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat-t',
        pretrain_img_size=224,
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_tiny_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

# The authors' RetinaNet lr, divided by 4 like the rest of the recipe.
optim_wrapper = dict(optimizer=dict(lr=5e-5))
