# YOLOX-s with DAttention after each of the neck's four fusion blocks (the CSP
# layers that merge two levels, top-down and bottom-up).
# zero_init: each block starts as the identity, so the detector computes what the plain one
# does until training moves the blocks (see configs/dattention/README.md).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='neck.top_down_blocks.*'), dict(after='neck.bottom_up_blocks.*')],
    defaults=dict(zero_init=True))
