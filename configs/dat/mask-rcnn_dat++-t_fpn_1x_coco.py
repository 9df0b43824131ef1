# Mask R-CNN with a DAT++-T backbone, 1x schedule.
# Drop path 0.0: DAT-Detection config.
_base_ = './mask-rcnn_dat-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-t',
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
