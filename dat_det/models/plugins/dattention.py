"""``DAttention`` registered in mmdet's ``MODELS``: a plug-in for ResNet's ``plugins``.

mmdet's ``ResNet`` builds each plug-in of a bottleneck with mmcv's ``build_plugin_layer(cfg,
in_channels=...)`` and names it after the class's ``_abbr_`` plus ``postfix``::

    backbone=dict(type='ResNet', ..., plugins=[dict(
        cfg=dict(type='DAttention', zero_init=True), stages=(False, False, True, True),
        position='after_conv2')])

adds ``layerN.i.dattention`` to the bottlenecks of stages 3 and 4 (after their 3x3 conv), and
no other key changes, so ImageNet or detector checkpoints of the plain ResNet still load.
"""
from __future__ import annotations

import copy
from typing import Optional

from mmdet.registry import MODELS
from mmengine.model import BaseModule

from dat_det.models.layers.dattention import DAttention


@MODELS.register_module(name='DAttention')
class DAttentionPlugin(DAttention, BaseModule):
    """:class:`dat_det.models.layers.DAttention` as an mmengine ``BaseModule``.

    Same parameters and forward as the layer. ``init_weights`` restores the layer's own
    initialisation (and the zeroed output projection of ``zero_init``) after a parent's
    ``init_cfg`` (ResNet's Kaiming init of every ``Conv2d``) overwrote it, unless this block
    has an ``init_cfg`` of its own.

    Args:
        in_channels: channels C.
        init_cfg: mmengine initialisation of this block (default: the layer's).
        Other arguments: see :class:`~dat_det.models.layers.DAttention`.
    """

    _abbr_ = 'dattention'

    def __init__(self, in_channels: int, init_cfg: Optional[dict] = None, **kwargs) -> None:
        DAttention.__init__(self, in_channels, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)

    def init_weights(self) -> None:
        if self.init_cfg:
            super().init_weights()
            return
        self.reset_parameters()
        self._is_init = True
