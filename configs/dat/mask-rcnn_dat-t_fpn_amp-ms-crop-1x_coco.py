# Mask R-CNN with DAT-T, the DAT v1 backbone (CVPR 2022), trained like the published
# DAT++-T model of the base config. No official COCO weights exist for it; drop path
# 0.2 is a Swin-style rate, not the authors'.
_base_ = './mask-rcnn_dat++-t_fpn_amp-ms-crop-1x_coco.py'

model = dict(
    backbone=dict(
        arch='dat-t',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/dat_tiny_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
