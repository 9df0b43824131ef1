# Deformable DETR, ResNet-50, four levels, 50 epochs on COCO: mmdet 3.3's recipe (official:
# AdamW 2e-4, backbone and sampling offsets / reference points x0.1, weight decay 1e-4, grad
# clip 0.1, lr drop at epoch 40, multi-scale training with random crops, total batch 32) with
# the encoder and decoder on dat_det's multi-scale deformable attention. Everything but the
# detector type is mmdet's config; its checkpoints load after
# tools/model_converters/deformable_detr_mmdet2datdet.py.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(type='MSDADeformableDETR')
