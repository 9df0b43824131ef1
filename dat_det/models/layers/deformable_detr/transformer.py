"""Encoder and decoder of Deformable DETR (post-norm layers, batch first)."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from dat_det.ops import SpatialShapes

from .msda import MSDeformAttn
from .utils import decoder_reference_inputs, encoder_reference_points, inverse_sigmoid

_ACTIVATIONS = {'ReLU': nn.ReLU, 'GELU': nn.GELU}


class FeedForward(nn.Module):
    """Two-layer MLP with residual: ``x + drop(fc2(drop(act(fc1(x)))))``.

    Args:
        embed_dims: Input and output channels.
        feedforward_channels: Hidden channels.
        ffn_drop: Dropout after the activation and after ``fc2``.
        act_cfg: ``dict(type='ReLU' | 'GELU')``.
        num_fcs: Accepted for config compatibility; must be 2.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 feedforward_channels: int = 1024,
                 ffn_drop: float = 0.0,
                 act_cfg: Optional[Dict] = None,
                 num_fcs: int = 2) -> None:
        super().__init__()
        if num_fcs != 2:
            raise ValueError(f'only num_fcs=2 is supported, got {num_fcs}')
        act_type = (act_cfg or {}).get('type', 'ReLU')
        if act_type not in _ACTIVATIONS:
            raise ValueError(f'act_cfg type must be one of {sorted(_ACTIVATIONS)}, '
                             f'got {act_type}')
        self.fc1 = nn.Linear(embed_dims, feedforward_channels)
        # in place, as mmcv's FFN: no fresh (B, S, hidden) buffer per layer
        self.act = nn.ReLU(inplace=True) if act_type == 'ReLU' else _ACTIVATIONS[act_type]()
        self.fc2 = nn.Linear(feedforward_channels, embed_dims)
        self.drop1 = nn.Dropout(ffn_drop)
        self.drop2 = nn.Dropout(ffn_drop)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C)`` -> ``(..., C)``."""
        return x + self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def _msda(cfg: Optional[Dict]) -> Tuple[MSDeformAttn, nn.Dropout]:
    """Attention and the dropout on its output from an mmdet-style ``*_attn_cfg``."""
    cfg = dict(cfg or {})
    dropout = cfg.pop('dropout', 0.1)
    return MSDeformAttn(**cfg), nn.Dropout(dropout)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then FFN; each followed by LayerNorm.

    Args:
        self_attn_cfg: Kwargs of :class:`MSDeformAttn`, plus ``dropout``
            on its output (default 0.1).
        ffn_cfg: Kwargs of :class:`FeedForward`.
    """

    def __init__(self, self_attn_cfg: Optional[Dict] = None,
                 ffn_cfg: Optional[Dict] = None) -> None:
        super().__init__()
        self.self_attn, self.attn_drop = _msda(self_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        self.norm1 = nn.LayerNorm(self.embed_dims)
        self.ffn = FeedForward(**(ffn_cfg or {}))
        self.norm2 = nn.LayerNorm(self.embed_dims)

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor,
                spatial_shapes: SpatialShapes, level_start_index: Tensor,
                padding_mask: Optional[Tensor] = None) -> Tensor:
        """``(B, S, C)`` -> ``(B, S, C)``; ``reference_points`` ``(B, S, levels, 2)``."""
        attn = self.self_attn(query + query_pos, query, reference_points, spatial_shapes,
                              level_start_index, padding_mask)
        query = self.norm1(query + self.attn_drop(attn))
        return self.norm2(self.ffn(query))


class DeformableEncoder(nn.Module):
    """Stack of :class:`DeformableEncoderLayer` over the flattened multi-level features.

    Args:
        num_layers: Number of layers.
        layer_cfg: Kwargs of every layer.
    """

    def __init__(self, num_layers: int, layer_cfg: Optional[Dict] = None) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            [DeformableEncoderLayer(**(layer_cfg or {})) for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, spatial_shapes: SpatialShapes,
                level_start_index: Tensor, valid_ratios: Tensor,
                padding_mask: Optional[Tensor] = None) -> Tensor:
        """Encode.

        Args:
            query: ``(B, S, C)`` flattened features of all levels.
            query_pos: ``(B, S, C)`` positional plus level embeddings.
            spatial_shapes: ``(levels, 2)`` (H, W).
            level_start_index: ``(levels,)``.
            valid_ratios: ``(B, levels, 2)`` (w, h).
            padding_mask: ``(B, S)`` bool, True on padding.

        Returns:
            ``(B, S, C)`` memory.
        """
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, spatial_shapes,
                          level_start_index, padding_mask)
        return query


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention to the memory, FFN.

    Each block is followed by dropout on its output, the residual and LayerNorm.

    Args:
        self_attn_cfg: ``embed_dims``, ``num_heads``, ``dropout`` (attention weights and
            output), ``batch_first`` (must be True).
        cross_attn_cfg: Kwargs of :class:`MSDeformAttn`, plus ``dropout``.
        ffn_cfg: Kwargs of :class:`FeedForward`.
    """

    def __init__(self, self_attn_cfg: Optional[Dict] = None,
                 cross_attn_cfg: Optional[Dict] = None,
                 ffn_cfg: Optional[Dict] = None) -> None:
        super().__init__()
        self_attn_cfg = dict(self_attn_cfg or {})
        if not self_attn_cfg.pop('batch_first', True):
            raise ValueError('only batch_first=True is supported')
        embed_dims = self_attn_cfg.pop('embed_dims', 256)
        num_heads = self_attn_cfg.pop('num_heads', 8)
        dropout = self_attn_cfg.pop('dropout', 0.0)
        if self_attn_cfg:
            raise ValueError(f'unsupported self_attn_cfg keys: {sorted(self_attn_cfg)}')
        self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                               batch_first=True)
        self.self_attn_drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.cross_attn, self.cross_attn_drop = _msda(cross_attn_cfg)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FeedForward(**(ffn_cfg or {}))
        self.norm3 = nn.LayerNorm(embed_dims)
        self.embed_dims = embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                reference_points: Tensor, spatial_shapes: SpatialShapes, level_start_index: Tensor,
                memory_mask: Optional[Tensor] = None,
                self_attn_mask: Optional[Tensor] = None) -> Tensor:
        """``(B, Nq, C)`` -> ``(B, Nq, C)``; ``reference_points`` ``(B, Nq, levels, 2|4)``;
        ``self_attn_mask`` ``(Nq, Nq)`` bool, True where query i must not attend to j."""
        q = query + query_pos
        attn = self.self_attn(q, q, query, attn_mask=self_attn_mask, need_weights=False)[0]
        query = self.norm1(query + self.self_attn_drop(attn))
        attn = self.cross_attn(query + query_pos, memory, reference_points, spatial_shapes,
                               level_start_index, memory_mask)
        query = self.norm2(query + self.cross_attn_drop(attn))
        return self.norm3(self.ffn(query))


class DeformableDecoder(nn.Module):
    """Stack of :class:`DeformableDecoderLayer` with optional iterative box refinement.

    Args:
        num_layers: Number of layers.
        layer_cfg: Kwargs of every layer.
        return_intermediate: Accepted for config compatibility; the outputs of all layers
            are always returned (they feed the auxiliary losses).
        post_norm_cfg: Accepted for config compatibility; must be ``None``.
    """

    def __init__(self, num_layers: int, layer_cfg: Optional[Dict] = None,
                 return_intermediate: bool = True, post_norm_cfg: Optional[Dict] = None) -> None:
        super().__init__()
        if not return_intermediate:
            raise ValueError('the decoder always returns its intermediate outputs')
        if post_norm_cfg is not None:
            raise ValueError('Deformable DETR decoder has no post norm')
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            [DeformableDecoderLayer(**(layer_cfg or {})) for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                reference_points: Tensor, spatial_shapes: SpatialShapes, level_start_index: Tensor,
                valid_ratios: Tensor, memory_mask: Optional[Tensor] = None,
                reg_branches: Optional[nn.ModuleList] = None) -> Tuple[Tensor, List[Tensor]]:
        """Decode.

        Args:
            query, query_pos: ``(B, Nq, C)``.
            memory: ``(B, S, C)`` encoder output.
            reference_points: ``(B, Nq, 2)`` points or ``(B, Nq, 4)`` boxes, normalized.
            valid_ratios: ``(B, levels, 2)``.
            memory_mask: ``(B, S)`` bool, True on padding.
            reg_branches: One box regressor per layer for iterative refinement: each layer's
                references are its predecessor's refined boxes, detached.

        Returns:
            Hidden states ``(layers, B, Nq, C)`` and the references after every layer,
            ``layers`` tensors of ``(B, Nq, 2|4)``.
        """
        states, references = [], []
        for layer_id, layer in enumerate(self.layers):
            query = layer(query, query_pos, memory,
                          decoder_reference_inputs(reference_points, valid_ratios),
                          spatial_shapes, level_start_index, memory_mask)
            if reg_branches is not None:
                delta = reg_branches[layer_id](query)
                logits = inverse_sigmoid(reference_points)
                if reference_points.shape[-1] == 2:
                    logits = torch.cat([logits, logits.new_zeros(logits.shape)], -1)
                reference_points = (delta + logits).sigmoid().detach()
            states.append(query)
            references.append(reference_points)
        return torch.stack(states), references
