# Cascade Mask R-CNN with DAT++-S, the published DAT-Detection model "Cascade Mask R-CNN
# DAT-S++ 3x" (their config cmrcn_small_3x_4n_dp05_lr4; 54.2 box AP, 46.9 mask AP), trained in
# fp32 (no fp16, unlike the DAT++-T models).
_base_ = './cascade-mask-rcnn_dat++-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-s',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_small_in1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(type='OptimWrapper')
