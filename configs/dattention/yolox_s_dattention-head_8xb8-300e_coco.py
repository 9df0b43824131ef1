# YOLOX-s with DAttention right before the head, on each level of the neck's
# output (strides 8, 16, 32; choose levels with index).
# zero_init: each block starts as the identity, so the detector computes what the plain one
# does until training moves the blocks (see configs/dattention/README.md).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='neck', index=[0, 1, 2])],
    defaults=dict(zero_init=True))
