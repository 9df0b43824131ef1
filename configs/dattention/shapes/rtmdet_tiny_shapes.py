# RTMDet-tiny from scratch on the generated shapes dataset (tools/misc/generate_shapes_dataset.py,
# data/shapes/) at 128 px: the plain detector of the with / without DAttention comparison
# (tools/analysis_tools/dattention_shapes_comparison.py; results in configs/dattention/README.md).
# mmdet's RTMDet-tiny model and AdamW (weight decay 0.05, none on norms and biases) as they
# are; what differs is what the data and two CPU cores need: no ImageNet weights, 5 classes,
# resize to 128 px and flip only (no mosaic / mixup / large-scale jitter), batch 8 at lr 1e-3
# with a 100-iteration warm-up and a cosine decay, no EMA, evaluation at the end only.
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'

data_root = 'data/shapes/'
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star', 'cross'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 160, 0), (160, 32, 240)])
image_scale = (128, 128)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=5),
    test_cfg=dict(nms_pre=1000, score_thr=0.01, max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 36
train_cfg = dict(
    max_epochs=max_epochs, val_interval=max_epochs, dynamic_intervals=None)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
custom_hooks = []
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
auto_scale_lr = dict(enable=False, base_batch_size=8)
