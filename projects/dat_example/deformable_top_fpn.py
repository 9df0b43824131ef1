"""An FPN whose coarsest input first passes one DAT deformable-attention block."""
from typing import Sequence, Tuple

import torch
from mmdet.models.necks import FPN
from mmdet.registry import MODELS

from dat_det.models.layers.dat import DeformableAttention, LayerNorm2d


@MODELS.register_module()
class DeformableTopFPN(FPN):
    """mmdet's ``FPN`` with a pre-norm residual DAT deformable attention on the last input.

    The coarsest backbone map (stride 32) gets global context from keys sampled at learned
    offsets before the usual top-down pathway; all other FPN arguments are mmdet's.

    Args:
        attn_heads: heads of the deformable attention.
        attn_groups: offset groups.
        attn_stride: key-grid stride.
        *args, **kwargs: passed to ``FPN``.
    """

    def __init__(self, *args, attn_heads: int = 8, attn_groups: int = 2, attn_stride: int = 1,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        top = self.in_channels[-1]
        self.top_norm = LayerNorm2d(top)
        self.top_attn = DeformableAttention(top, attn_heads, attn_groups, q_size=(7, 7),
                                            stride=attn_stride, offset_range_factor=-1,
                                            ksize=3)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Backbone maps (B, C_i, H_i, W_i) -> ``num_outs`` maps (B, out_channels, ., .)."""
        inputs = list(inputs)
        top = inputs[-1]
        inputs[-1] = top + self.top_attn(self.top_norm(top))[0]
        return super().forward(tuple(inputs))
