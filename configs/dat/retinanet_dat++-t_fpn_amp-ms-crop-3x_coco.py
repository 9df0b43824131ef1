# RetinaNet with DAT++-T, the published DAT-Detection model "RetinaNet DAT-T++ 3x"
# (their config rtn_tiny_3x_4n_dp02_lr2; 49.2 box AP): the 1x model with drop path 0.2 for
# 36 epochs, lr / 10 after epochs 27 and 33.
_base_ = './retinanet_dat++-t_fpn_amp-ms-crop-1x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.2))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
