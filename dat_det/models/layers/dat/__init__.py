"""DAT / DAT++ building blocks (torch and timm.layers; no registry)."""
from .deformable_attention import (
    FORMULATIONS,
    DeformableAttention,
    deformed_positions,
    key_reference_points,
    query_grid,
)
from .mlp import TransformerMLP, TransformerMLPWithConv, TransformerMLPWithConvV1
from .neighborhood_attention import (
    NeighborhoodAttention2D,
    neighborhood_attention_2d,
    neighborhood_attention_2d_gather,
    neighborhood_attention_2d_tiled,
)
from .norm import LayerNorm2d
from .padding import PadToMultiple, pad_to_multiple
from .presets import DAT_ARCH_SETTINGS, DAT_PRETRAIN_DROP_PATH, resolve_arch
from .residual import DropPath, LayerScale, LocalPerceptionUnit
from .stage import BLOCK_TYPES, TransformerStage
from .trunk import Trunk, TrunkStagesMixin, build_trunk
from .window_attention import LocalAttention, ShiftWindowAttention

__all__ = [
    'BLOCK_TYPES', 'DAT_ARCH_SETTINGS', 'DAT_PRETRAIN_DROP_PATH', 'DeformableAttention',
    'FORMULATIONS', 'TransformerMLPWithConvV1', 'deformed_positions',
    'pad_to_multiple',
    'DropPath', 'LayerNorm2d', 'LayerScale', 'LocalAttention', 'LocalPerceptionUnit',
    'NeighborhoodAttention2D', 'PadToMultiple', 'ShiftWindowAttention', 'TransformerMLP',
    'TransformerMLPWithConv', 'TransformerStage', 'Trunk', 'TrunkStagesMixin', 'build_trunk',
    'key_reference_points',
    'neighborhood_attention_2d', 'neighborhood_attention_2d_tiled', 'query_grid', 'resolve_arch',
    'neighborhood_attention_2d_gather',
]
