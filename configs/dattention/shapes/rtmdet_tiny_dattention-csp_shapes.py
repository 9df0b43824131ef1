# rtmdet_tiny_shapes.py with DAttention inside the residual blocks of backbone stages 3 and 4, as in
# ../rtmdet_tiny_dattention-csp_8xb32-300e_coco.py; nothing else differs.
_base_ = './rtmdet_tiny_shapes.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='backbone.stage[34].*.blocks.*.conv2')],
    defaults=dict(zero_init=True))
