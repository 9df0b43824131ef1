# The README's demo: DINO (3 scales, 1 encoder + 3 decoder layers, 128 channels) on dat_det's
# multi-scale deformable attention (MSDADINO) over the tiny DAT++ backbone of the Deformable
# DETR demo, trained from scratch on the generated shapes dataset on 2 CPU cores, as two DDP
# processes of batch 2 (tools/demo.sh runs tools/dist_train.sh with 2 processes).
# Everything not set here (backbone, neck, AdamW and its clip, sampler, hooks) is that config's.
# Why this shape (trials on the same data; s/iter measured interleaved in one process): at
# 128 px an iteration costs ~0.75x one at 160 px; one encoder layer and 256-wide feed-forward
# layers cut it further (~0.8x), and this smaller model left the early loss plateau sooner
# than a two-layer, 512-wide encoder. A total batch of 4 and lr 1e-3 each raised the mAP reached
# by epoch 9-12 over batch 8 and lr 5e-4 (0.41 and 0.35 vs 0.24 at epoch 12); lr 2e-3 stayed
# on the plateau longer, and 40 denoising queries instead of 20 gave the same mAP (0.547 vs
# 0.542 after 20 epochs in one process). On 2 idle cores two processes took ~0.19 s per
# iteration of 4 images where one process took ~0.28 s, which buys 24 epochs in 10 minutes.
# The mAP after a short schedule moves with its length, and not steadily: two-process runs
# gave 0.562 after 22 epochs, 0.639 after 24 and 0.633 after 26 (tools/demo.sh with
# TRAIN_ARGS="--cfg-options train_cfg.max_epochs=26 param_scheduler.1.end=26").
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

max_epochs = 24
# no validation inside training: tools/demo.sh evaluates the final checkpoint with tools/test.py
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs, val_begin=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))

# From scratch: a larger lr than the Deformable DETR demo (5e-4) left the early plateau sooner
# fused: PyTorch's single-kernel AdamW, faster on CPU than its loop over parameters
optim_wrapper = dict(optimizer=dict(lr=1e-3, fused=True))
auto_scale_lr = dict(enable=False, base_batch_size=4)  # 2 processes x 2 images

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
# 2 images in each of the 2 processes: a total batch of 4, twice the optimizer steps of
# batch 8 for ~1.15x the cost per image; one loading worker per process
train_dataloader = dict(batch_size=2, num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
