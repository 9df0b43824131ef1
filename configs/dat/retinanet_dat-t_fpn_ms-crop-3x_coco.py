# RetinaNet with a DAT-T backbone, 3x schedule with multi-scale + crop training.
# Drop path 0.2: Swin-style rate, no published DAT recipe.
# Augmentation and schedule: configs/_base_/schedules/dat_ms-crop-3x.py.
_base_ = ['./retinanet_dat-t_fpn_1x_coco.py', '../_base_/schedules/dat_ms-crop-3x.py']

model = dict(backbone=dict(drop_path_rate=0.2))
train_pipeline = {{_base_.ms_crop_3x_box_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = {{_base_.ms_crop_3x_max_epochs}}
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = {{_base_.ms_crop_3x_param_scheduler}}
