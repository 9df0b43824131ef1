# Cascade Mask R-CNN with a DAT++-S backbone, 3x schedule with multi-scale + crop training.
# Drop path 0.5: DAT-Detection config.
_base_ = './cascade-mask-rcnn_dat-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
