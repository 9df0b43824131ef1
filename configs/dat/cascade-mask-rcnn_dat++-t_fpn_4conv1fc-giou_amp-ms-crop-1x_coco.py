# Cascade Mask R-CNN with DAT++-T, the published DAT-Detection model "Cascade Mask R-CNN
# DAT-T++ 1x" (their config cmrcn_tiny_1x_4n_dp00_lr4; 52.2 box AP, 45.0 mask AP on COCO
# val2017). Official weights: configs/dat/README.md. Recipe:
# configs/_base_/schedules/dat++_adamw_1x.py and the multi-scale + crop augmentation.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py', '../_base_/schedules/dat++_adamw_1x.py',
    'mmdet::_base_/default_runtime.py', '../_base_/datasets/ms-crop_train_pipelines.py'
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
    neck=dict(in_channels=[64, 128, 256, 512]),
    # The "4conv1fc-giou" box heads of mmdet's ConvNeXt cascade configs, which DAT-Detection
    # uses: four 3x3 convs with SyncBN and one fc shared by classification and regression,
    # class-specific deltas decoded to boxes for a GIoU loss; stage i tightens target_stds.
    roi_head=dict(bbox_head=[
        dict(type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256,
             conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80,
             norm_cfg=dict(type='SyncBN', requires_grad=True), reg_class_agnostic=False,
             reg_decoded_bbox=True,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                             target_stds=stds),
             loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
             loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067])
    ]))

train_pipeline = {{_base_.ms_crop_mask_train_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
