"""DAT / DAT++ building blocks (torch and einops only, no registry)."""
from .deformable_attention import DeformableAttention, key_reference_points, query_grid
from .mlp import TransformerMLP, TransformerMLPWithConv
from .neighborhood_attention import (
    NeighborhoodAttention2D,
    neighborhood_attention_2d,
    neighborhood_attention_2d_tiled,
)
from .norm import LayerNorm2d
from .presets import DAT_ARCH_SETTINGS, DAT_PRETRAIN_DROP_PATH, resolve_arch
from .residual import DropPath, LayerScale, LocalPerceptionUnit
from .stage import BLOCK_TYPES, TransformerStage
from .window_attention import LocalAttention, ShiftWindowAttention

__all__ = [
    'BLOCK_TYPES', 'DAT_ARCH_SETTINGS', 'DAT_PRETRAIN_DROP_PATH', 'DeformableAttention',
    'DropPath', 'LayerNorm2d', 'LayerScale', 'LocalAttention', 'LocalPerceptionUnit',
    'NeighborhoodAttention2D', 'ShiftWindowAttention', 'TransformerMLP',
    'TransformerMLPWithConv', 'TransformerStage', 'key_reference_points',
    'neighborhood_attention_2d', 'neighborhood_attention_2d_tiled', 'query_grid', 'resolve_arch',
]
