# rtmdet_tiny_shapes.py with DAttention before the SPP block, as in
# ../rtmdet_tiny_dattention-spp_8xb32-300e_coco.py; nothing else differs.
_base_ = './rtmdet_tiny_shapes.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(before='backbone.stage4.1')],
    defaults=dict(zero_init=True))
