# RetinaNet R50 with a DAttention block in every bottleneck of ResNet stages 4 and 5, after
# the 3x3 conv (mmdet's ResNet plugins; new keys layer3.i.dattention.* / layer4.i.dattention.*
# only, so the torchvision weights load as for the plain model). zero_init: each block starts
# as the identity.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dat_det.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='DAttention', zero_init=True),
            stages=(False, False, True, True),
            position='after_conv2')
    ]))
