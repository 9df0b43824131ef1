# YOLOX-s with DAttention before the SPP block of the last backbone stage.
# zero_init: each block starts as the identity, so the detector computes what the plain one
# does until training moves the blocks (see configs/dattention/README.md).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(before='backbone.stage4.1')],
    defaults=dict(zero_init=True))
