# DINO (4 scales), ResNet-50, 12 epochs on COCO: mmdet 3.3's recipe
# (dino-4scale_r50_8xb2-12e_coco.py: 900 queries, 100 denoising queries, AdamW 1e-4 with the
# backbone x0.1, grad clip 0.1, lr drop at epoch 11, total batch 16) with the encoder and
# decoder on dat_det's multi-scale deformable attention. mmdet's DINO checkpoints load after
# tools/model_converters/deformable_detr_mmdet2datdet.py.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(type='MSDADINO')
