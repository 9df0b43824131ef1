# Deformable DETR, DAT-T backbone, with iterative box refinement.
_base_ = 'deformable-detr_dat-t_16xb2-50e_coco.py'
model = dict(with_box_refine=True)
