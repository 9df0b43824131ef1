# DINO (4 scales) with a DAT++-T backbone, 12 epochs: the DAT-T config with DAT++-T.
# Weights: the official DAT++-T ImageNet-1k checkpoint at checkpoints/dat_pp_tiny_in1k_224.pth.
_base_ = './dino-4scale_dat-t_8xb2-12e_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-t',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512]))
