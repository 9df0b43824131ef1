# Mask R-CNN with DAT++-S, the published DAT-Detection model "Mask R-CNN DAT-S++ 3x"
# (their config mrcn_small_3x_4n_dp05_lr4; 51.2 box AP, 45.7 mask AP).
_base_ = './mask-rcnn_dat++-t_fpn_amp-ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
