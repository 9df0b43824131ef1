# DINO (4 scales) with a DAT-T backbone (C3-C5 of the ImageNet-1k model), 12 epochs: the
# ResNet-50 recipe with the backbone swapped. Not a configuration of the authors.
# Drop path 0.2: Swin-style rate, no published DAT recipe.
# Weights: the official ImageNet-1k checkpoint (github.com/LeapLabTHU/DAT, README), saved as
# checkpoints/dat_tiny_in1k_224.pth; set init_cfg=None to train from scratch.
_base_ = './dino-4scale_r50_8xb2-12e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat-t',
        pretrain_img_size=224,
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_tiny_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768]))

# no weight decay on the relative-position tables, as in DAT's detection recipe (the
# backbone's lr x0.1 comes from the base)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'rpe_table': dict(decay_mult=0.)
        }))
