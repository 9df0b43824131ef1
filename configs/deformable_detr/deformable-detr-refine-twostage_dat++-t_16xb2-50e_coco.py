# Deformable DETR, DAT++-T backbone, two-stage, with iterative box refinement.
_base_ = 'deformable-detr-refine_dat++-t_16xb2-50e_coco.py'
model = dict(as_two_stage=True)
