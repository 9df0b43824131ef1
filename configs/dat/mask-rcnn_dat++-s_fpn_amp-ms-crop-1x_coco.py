# Mask R-CNN with DAT++-S, the published DAT-Detection model "Mask R-CNN DAT-S++ 1x"
# (their config mrcn_small_1x_4n_dp01_lr4; 49.8 box AP, 44.5 mask AP).
_base_ = './mask-rcnn_dat++-t_fpn_amp-ms-crop-1x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
