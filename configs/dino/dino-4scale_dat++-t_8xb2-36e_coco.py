# DINO (4 scales) with a DAT++-T backbone, 36 epochs: mmdet's DINO 36-epoch schedule
# (dino-4scale_r50_8xb2-36e_coco.py: lr drop at epoch 30) on the 12-epoch config.
_base_ = './dino-4scale_dat++-t_8xb2-12e_coco.py'

max_epochs = 36
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1)
]
