# rtmdet_tiny_shapes.py with DAttention after the neck's four fusion blocks, as in
# ../rtmdet_tiny_dattention-neck_8xb32-300e_coco.py; nothing else differs.
_base_ = './rtmdet_tiny_shapes.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='WithDAttention',
    model={{_base_.model}},
    insert=[dict(after='neck.top_down_blocks.*'), dict(after='neck.bottom_up_blocks.*')],
    defaults=dict(zero_init=True))
