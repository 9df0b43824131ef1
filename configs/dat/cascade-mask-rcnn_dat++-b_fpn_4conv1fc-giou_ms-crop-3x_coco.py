# Cascade Mask R-CNN with DAT++-B, the published DAT-Detection model "Cascade Mask R-CNN
# DAT-B++ 3x" (their config cmrcn_base_3x_8n_dp08_lr4; 54.5 box AP, 47.0 mask AP), trained in
# fp32 with one image per GPU (8 nodes x 8 GPUs: still 64 images per batch).
_base_ = './cascade-mask-rcnn_dat++-s_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='dat++-b',
        drop_path_rate=0.8,
        init_cfg=dict(checkpoint='checkpoints/dat_pp_base_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
train_dataloader = dict(batch_size=1, num_workers=1)
