# The DAT 3x recipe's multi-scale + crop training augmentation (that of DETR / Sparse R-CNN,
# as in DAT-Detection and mmdet's Swin 3x configs) and 36-epoch step schedule.
# It only defines keys of its own, so a 3x config lists it beside its 1x detector config and
# takes what it needs:
#   train_pipeline = {{_base_.ms_crop_3x_mask_pipeline}}  # or _box_ without masks
#   train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
#   max_epochs = {{_base_.ms_crop_3x_max_epochs}}
#   train_cfg = dict(max_epochs=max_epochs)
#   param_scheduler = {{_base_.ms_crop_3x_param_scheduler}}
ms_crop_3x_resize_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
                            (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
                            (800, 1333)]
ms_crop_3x_box_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_crop_3x_resize_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_crop_3x_resize_scales,
                     keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
ms_crop_3x_mask_pipeline = [
    dict(step, with_mask=True) if step['type'] == 'LoadAnnotations' else step
    for step in ms_crop_3x_box_pipeline
]
ms_crop_3x_max_epochs = 36
ms_crop_3x_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=ms_crop_3x_max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
