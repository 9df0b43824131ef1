"""DINO's decoder (Zhang et al., ICLR 2023) on the Deformable DETR decoder layers.

Differences from :class:`DeformableDecoder`: every layer derives its query positions from its
current reference boxes (sine encoding -> ``ref_point_head`` MLP), the self-attention takes the
denoising mask, every layer refines the boxes, and the refined boxes are returned *before*
they are detached ("look forward twice": layer ``i``'s box loss reaches layer ``i - 1``'s
regressor through the reference the head adds its delta to).
"""
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .positional_encoding import _interleave_sin_cos
from .transformer import DeformableDecoderLayer
from .utils import decoder_reference_inputs, inverse_sigmoid


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (``layers.i`` as in mmdet's MLP).

    Args:
        input_dim, hidden_dim, output_dim: Channels in, between and out.
        num_layers: Linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., input_dim)`` -> ``(..., output_dim)``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu_()  # a fresh linear output: in place is safe for autograd
        return x


def box_sine_encoding(boxes: Tensor, num_feats: int = 128, temperature: int = 10000) -> Tensor:
    """Sine encoding of normalized points or boxes, in the order y, x (, w, h).

    Args:
        boxes: ``(..., 2)`` (x, y) or ``(..., 4)`` (cx, cy, w, h) in ``[0, 1]``.
        num_feats: Channels per coordinate.

    Returns:
        ``(..., 2 * num_feats)`` or ``(..., 4 * num_feats)``.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    order = (1, 0, 2, 3)[:boxes.shape[-1]]
    return torch.cat([_interleave_sin_cos((boxes[..., i] * (2 * math.pi))[..., None] / dim_t)
                      for i in order], -1)


class DINODecoder(nn.Module):
    """Stack of :class:`DeformableDecoderLayer` with DINO's query positions and refinement.

    Args:
        num_layers: Number of layers.
        layer_cfg: Kwargs of every layer.
        return_intermediate: Accepted for config compatibility; must be True.
        post_norm_cfg: Accepted for config compatibility; must be ``None`` (the decoder's
            own ``norm`` is always applied to the returned states).
    """

    def __init__(self, num_layers: int, layer_cfg: Optional[Dict] = None,
                 return_intermediate: bool = True, post_norm_cfg: Optional[Dict] = None) -> None:
        super().__init__()
        if not return_intermediate:
            raise ValueError('the decoder always returns its intermediate outputs')
        if post_norm_cfg is not None:
            raise ValueError('the DINO decoder has no post norm beyond its own `norm`')
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            [DeformableDecoderLayer(**(layer_cfg or {})) for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        self.ref_point_head = MLP(self.embed_dims * 2, self.embed_dims, self.embed_dims, 2)
        self.norm = nn.LayerNorm(self.embed_dims)

    def forward(self, query: Tensor, memory: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                reg_branches: nn.ModuleList, memory_mask: Optional[Tensor] = None,
                self_attn_mask: Optional[Tensor] = None) -> Tuple[Tensor, List[Tensor]]:
        """Decode.

        Args:
            query: ``(B, Nq, C)`` content queries (denoising queries first in training).
            memory: ``(B, S, C)`` encoder output.
            reference_points: ``(B, Nq, 4)`` normalized (cx, cy, w, h) boxes.
            valid_ratios: ``(B, levels, 2)``.
            reg_branches: One box regressor per layer.
            memory_mask: ``(B, S)`` bool, True on padding.
            self_attn_mask: ``(Nq, Nq)`` bool, True where a query must not attend (the
                denoising groups and the matching queries are kept apart).

        Returns:
            Normed hidden states ``(layers, B, Nq, C)`` and ``layers + 1`` references
            ``(B, Nq, 4)``: the initial boxes, then every layer's refined boxes, not detached.
        """
        if reference_points.shape[-1] != 4:
            raise ValueError('DINO decodes from boxes: reference_points must be (B, Nq, 4), '
                             f'got {tuple(reference_points.shape)}')
        states, references = [], [reference_points]
        for layer_id, layer in enumerate(self.layers):
            level_refs = decoder_reference_inputs(reference_points, valid_ratios)
            query_pos = self.ref_point_head(
                box_sine_encoding(level_refs[:, :, 0], self.embed_dims // 2))
            query = layer(query, query_pos, memory, level_refs, spatial_shapes,
                          level_start_index, memory_mask, self_attn_mask=self_attn_mask)
            refined = (reg_branches[layer_id](query)
                       + inverse_sigmoid(reference_points, eps=1e-3)).sigmoid()
            states.append(self.norm(query))
            references.append(refined)
            reference_points = refined.detach()
        return torch.stack(states), references
