# The multi-scale + crop training augmentation of DETR / Sparse R-CNN that DAT-Detection uses
# for every published model (1x and 3x), as mmdet's Swin and ConvNeXt 3x configs do: flip, then
# either a resize to one of 11 shorter sides, or a resize, a random crop and that resize again.
# Only variables: a config lists this file among its bases and picks one, e.g.
#   train_pipeline = {{_base_.ms_crop_mask_train_pipeline}}
#   train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
ms_crop_short_sides = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
ms_crop_box_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(side, 1333) for side in ms_crop_short_sides])],
        [dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(side, 1333) for side in (400, 500, 600)]),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
              allow_negative_crop=True),
         dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(side, 1333) for side in ms_crop_short_sides])],
    ]),
    dict(type='PackDetInputs'),
]
ms_crop_mask_train_pipeline = [
    dict(step, with_mask=True) if step['type'] == 'LoadAnnotations' else step
    for step in ms_crop_box_train_pipeline
]
