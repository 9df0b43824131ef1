# Mask R-CNN with a DAT++-T backbone, 3x schedule with multi-scale + crop training.
# Drop path 0.3: DAT-Detection config.
_base_ = './mask-rcnn_dat-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-t',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
