"""Deformable DETR building blocks on the ``dat_det.ops`` multi-scale deformable attention."""
from .dino import DINODecoder, box_sine_encoding
from .msda import MSDeformAttn, star_offsets
from .positional_encoding import SinePositionalEncoding, proposal_pos_embed
from .transformer import (
    DeformableDecoder,
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    FeedForward,
)
from .two_stage import encoder_proposals, select_topk
from .utils import (
    decoder_reference_inputs,
    encoder_reference_points,
    inverse_sigmoid,
    level_masks,
    level_start_index,
    padding_mask,
    valid_ratios,
)

__all__ = [
    'DINODecoder', 'box_sine_encoding',
    'MSDeformAttn', 'star_offsets', 'SinePositionalEncoding',
    'proposal_pos_embed', 'DeformableEncoder', 'DeformableEncoderLayer', 'DeformableDecoder',
    'DeformableDecoderLayer', 'FeedForward', 'encoder_proposals', 'select_topk',
    'decoder_reference_inputs', 'encoder_reference_points', 'inverse_sigmoid', 'level_masks',
    'level_start_index', 'padding_mask', 'valid_ratios'
]
