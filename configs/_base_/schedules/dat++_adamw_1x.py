# The optimisation of the published DAT++ COCO detectors (DAT-Detection): AdamW, lr 4e-4
# (RetinaNet configs: 2e-4) for 64 images per batch (4 nodes x 8 GPUs x 2 images; DAT++-B:
# 8 x 8 x 1), weight decay 0.05 except on norm layers and on parameters named like position
# tables or norms, fp16 with dynamic loss scaling, no gradient clipping; mmdet's 1x schedule
# (500 linear warm-up iterations from 0.001 x lr, lr / 10 after epochs 8 and 11).
# On fewer images per batch, `tools/train.py --auto-scale-lr` scales lr linearly.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={key: dict(decay_mult=0.0) for key in (
            'absolute_pos_embed', 'relative_position_bias_table', 'rpe_table', 'norm')}))
auto_scale_lr = dict(enable=False, base_batch_size=64)
