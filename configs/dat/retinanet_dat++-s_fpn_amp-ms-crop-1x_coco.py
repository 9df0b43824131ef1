# RetinaNet with DAT++-S, the published DAT-Detection model "RetinaNet DAT-S++ 1x"
# (their config rtn_small_1x_4n_dp01_lr2; 48.3 box AP).
_base_ = './retinanet_dat++-t_fpn_amp-ms-crop-1x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768]))
