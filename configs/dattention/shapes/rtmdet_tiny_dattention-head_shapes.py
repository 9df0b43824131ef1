# rtmdet_tiny_shapes.py with DAttention before the head on levels 0, 1 and 2, as in
# ../rtmdet_tiny_dattention-head_8xb32-300e_coco.py; nothing else differs.
_base_ = './rtmdet_tiny_shapes.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='neck', index=[0, 1, 2])],
    defaults=dict(zero_init=True))
