# Mask R-CNN with DAT++-T, the published DAT-Detection model "Mask R-CNN DAT-T++ 1x"
# (their config mrcn_tiny_1x_4n_dp00_lr4; 48.7 box AP, 43.7 mask AP on COCO val2017).
# Official weights: configs/dat/README.md. Recipe: configs/_base_/schedules/dat++_adamw_1x.py
# and the multi-scale + crop augmentation (their 1x uses it too).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/dat++_adamw_1x.py', 'mmdet::_base_/default_runtime.py',
    '../_base_/datasets/ms-crop_train_pipelines.py'
]
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='dat++-t',
        pretrain_img_size=224,
        drop_path_rate=0.0,
        out_indices=(0, 1, 2, 3),
        with_cp=True,  # as the authors trained; saves memory, same results
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    # DAT-Detection's P6 is a stride-2 conv on the last backbone map (mmdet's base max-pools)
    neck=dict(in_channels=[64, 128, 256, 512], add_extra_convs='on_input'))

train_pipeline = {{_base_.ms_crop_mask_train_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
