# Cascade Mask R-CNN with DAT++-T, the published DAT-Detection model "Cascade Mask R-CNN
# DAT-T++ 3x" (their config cmrcn_tiny_3x_4n_dp01_lr4; 53.0 box AP, 46.0 mask AP): the 1x model
# with drop path 0.1 for 36 epochs, lr / 10 after epochs 27 and 33.
_base_ = './cascade-mask-rcnn_dat++-t_fpn_4conv1fc-giou_amp-ms-crop-1x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.1))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
