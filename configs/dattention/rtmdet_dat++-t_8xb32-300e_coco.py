# RTMDet's neck and head (the RTMDet-s widths: 128 / 256 / 512 channels in) over a DAT++-T
# backbone (stages 2-4: 128 / 256 / 512 channels at strides 8 / 16 / 32).
# Images normalised in RGB as the ImageNet weights expect (as mmdet's RTMDet with a Swin
# backbone); RTMDet's own optimiser and schedule otherwise, without weight decay on the
# position-bias tables. Drop path 0.2: Swin-style rate, no published DAT recipe for RTMDet.
# Weights: the official DAT++-T ImageNet-1k checkpoint at checkpoints/dat_pp_tiny_in1k_224.pth.
_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat++-t',
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512]))

optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'rpe_table': dict(decay_mult=0.), 'rpb': dict(decay_mult=0.)}))
