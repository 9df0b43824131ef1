# RetinaNet with DAT++-T, the published DAT-Detection model "RetinaNet DAT-T++ 1x"
# (their config rtn_tiny_1x_4n_dp00_lr2; 46.8 box AP on COCO val2017).
# Official weights: configs/dat/README.md. Recipe: configs/_base_/schedules/dat++_adamw_1x.py
# with lr 2e-4, and the multi-scale + crop augmentation (their 1x uses it too).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
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
        # stage 0 is not used (no norm layer there either, as in DAT-Detection)
        out_indices=(1, 2, 3),
        with_cp=True,  # as the authors trained; saves memory, same results
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dat_pp_tiny_in1k_224.pth')),
    # P3-P5 from stages 1-3, P6 and P7 from stride-2 convs on stage 3's map
    neck=dict(in_channels=[128, 256, 512], start_level=0))

train_pipeline = {{_base_.ms_crop_box_train_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
