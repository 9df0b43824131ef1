# RetinaNet with a DAT-B backbone, 1x schedule.
# Drop path 0.5: Swin-style rate, no published DAT recipe.
_base_ = './retinanet_dat-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='dat-b',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_base_in1k_224.pth')),
    neck=dict(in_channels=[256, 512, 1024], start_level=0, num_outs=5))
