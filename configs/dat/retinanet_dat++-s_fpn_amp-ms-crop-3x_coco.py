# RetinaNet with DAT++-S, the published DAT-Detection model "RetinaNet DAT-S++ 3x"
# (their config rtn_small_3x_4n_dp05_lr2; 50.2 box AP).
_base_ = './retinanet_dat++-t_fpn_amp-ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768]))
