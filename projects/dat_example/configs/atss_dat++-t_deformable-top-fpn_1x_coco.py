# ATSS with a DAT++-T backbone and DeformableTopFPN (this project), 1x schedule: mmdet's
# atss_r50_fpn_1x_coco.py with the backbone, the neck and the optimizer (AdamW) replaced.
# Run from the repository root so that `projects.dat_example` is importable:
#   python tools/train.py projects/dat_example/configs/atss_dat++-t_deformable-top-fpn_1x_coco.py
# Weights: official DAT++-T ImageNet-1k checkpoint at checkpoints/dat_pp_tiny_in1k_224.pth.
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['dat_det.models', 'projects.dat_example'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat++-t',
        drop_path_rate=0.1,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    # C3-C5 come out of the backbone (ResNet's config drops C2 with start_level=1)
    neck=dict(
        type='DeformableTopFPN',
        in_channels=[128, 256, 512],
        start_level=0,
        attn_heads=8,
        attn_groups=2))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'rpe_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
