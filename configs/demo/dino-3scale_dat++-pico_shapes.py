# The README's demo: DINO (3 scales, 1 encoder + 3 decoder layers, 128 channels) on dat_det's
# multi-scale deformable attention (MSDADINO) over the tiny DAT++ backbone of the Deformable
# DETR demo, trained from scratch on the generated shapes dataset on 2 CPU cores.
# Everything not set here (backbone, neck, AdamW and its clip, sampler, hooks) is that config's.
# Two runs of tools/demo.sh printed val bbox mAP 0.577 (20 epochs, 2 shared CPU cores).
# Why this shape (trials on the same data; s/iter measured interleaved in one process): at
# 128 px an iteration costs ~0.75x one at 160 px; one encoder layer and 256-wide feed-forward
# layers cut it further (~0.8x), and this smaller model left the early loss plateau sooner
# than a two-layer, 512-wide encoder. Batch 4 and lr 1e-3 each raised the mAP reached by
# epoch 9-12 over batch 8 and lr 5e-4 (0.41 and 0.35 vs 0.24 at epoch 12).
_base_ = './deformable-detr-refine-twostage_dat++-pico_shapes.py'
embed_dims = 128
ffn_channels = 256

model = dict(
    type='MSDADINO',
    num_queries=50,
    encoder=dict(
        num_layers=1,
        layer_cfg=dict(ffn_cfg=dict(feedforward_channels=ffn_channels))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(ffn_cfg=dict(feedforward_channels=ffn_channels))),
    # DINO's sine encoding (temperature 20, no offset) at our width
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True, offset=0.0,
                             temperature=20),
    bbox_head=dict(type='DINOHead', loss_cls=dict(loss_weight=1.0)),
    # 20 denoising queries: positive and negative groups of noised ground-truth boxes
    dn_cfg=dict(
        label_noise_scale=0.5,
        box_noise_scale=1.0,
        group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=20)))

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))

# From scratch: a larger lr than the Deformable DETR demo (5e-4) left the early plateau sooner
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(enable=False, base_batch_size=4)

# 128 px: the images are 160-224 px, so the smallest shapes stay ~11 px wide
image_scale = (128, 128)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# batch 4: twice the optimizer steps of batch 8 for ~1.15x the cost per image
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
