# YOLOX-s with DAttention inside the residual blocks of the CSP layers of
# backbone stages 3 and 4 (after each block's second conv, before it adds its identity).
# zero_init: each block starts as the identity, so the detector computes what the plain one
# does until training moves the blocks (see configs/dattention/README.md).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='backbone.stage[34].*.blocks.*.conv2')],
    defaults=dict(zero_init=True))
