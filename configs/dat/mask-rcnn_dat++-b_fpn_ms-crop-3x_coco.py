# Mask R-CNN with a DAT++-B backbone, 3x schedule with multi-scale + crop training.
# Drop path 0.7: Swin-style rate, no published DAT recipe.
_base_ = './mask-rcnn_dat-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-b',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_base_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
