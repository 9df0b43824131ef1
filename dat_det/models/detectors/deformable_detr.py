"""Deformable DETR on dat_det's multi-scale deformable attention, registered in mmdet."""
from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from torch import Tensor, nn

from dat_det.ops import SpatialShapes

from ..layers.deformable_detr import (
    DeformableDecoder,
    encoder_proposals,
    proposal_pos_embed,
    select_topk,
)
from .msda_transformer import MSDATransformerMixin


@MODELS.register_module()
class MSDADeformableDETR(MSDATransformerMixin, DeformableDETR):
    """Deformable DETR (Zhu et al., ICLR 2021) whose encoder and decoder are dat_det layers.

    Backbone, neck, :class:`mmdet.models.DeformableDETRHead` (Hungarian assigner, focal, L1
    and GIoU losses), the loss/predict flow and the config schema are mmdet's; the
    transformer runs on :func:`dat_det.ops.multi_scale_deformable_attn`. Weights convert
    to and from mmdet's ``DeformableDETR`` with
    :func:`dat_det.models.checkpoint.from_mmdet` / ``to_mmdet``.

    One deliberate difference: with ``as_two_stage``, the top-k proposals are chosen among
    valid positions only, never on padding (mmdet ranks padded positions too).

    Args:
        num_feature_levels: Levels the attention samples; it fills ``num_levels`` of the
            attention configs that leave it out.
        with_box_refine: Refine the references layer by layer with per-layer regressors.
        as_two_stage: Take the decoder references from the top-k encoder proposals.
        num_queries: Object queries (and proposals in two-stage mode).
        msda_backend: Backend of the op for every attention; ``None`` lets it choose.
        Other arguments: as :class:`mmdet.models.DeformableDETR`.

    Levels, encoder and weight init come from :class:`MSDATransformerMixin` (shared with
    :class:`MSDADINO`), in mmdet's order; :meth:`init_detector_layers` is the query side.
    """

    def init_detector_layers(self) -> None:
        """Xavier for the two-stage memory and position transforms, or for the
        reference-point layer (bias 0); a normal ``level_embed``. As mmdet's."""
        if self.as_two_stage:
            for layer in (self.memory_trans_fc, self.pos_trans_fc):
                nn.init.xavier_uniform_(layer.weight)
        else:
            nn.init.xavier_uniform_(self.reference_points_fc.weight)
            nn.init.zeros_(self.reference_points_fc.bias)
        nn.init.normal_(self.level_embed)

    def _init_layers(self) -> None:
        """Build positional encoding, encoder, decoder, then the query side: learned query
        pairs and their reference-point layer, or the layers that turn encoder proposals into
        queries (two-stage)."""
        self._build_encoder_decoder(DeformableDecoder)
        dims, single_stage = self.embed_dims, not self.as_two_stage
        if single_stage:
            # each row is (query_pos, query), split in pre_decoder
            self.query_embedding = nn.Embedding(self.num_queries, 2 * dims)
        self.level_embed = nn.Parameter(torch.empty(self.num_feature_levels, dims))
        if single_stage:
            self.reference_points_fc = nn.Linear(dims, 2)
        else:
            # proposals -> queries: a memory transform, and the top-k boxes' positions
            self.memory_trans_fc = nn.Linear(dims, dims)
            self.memory_trans_norm = nn.LayerNorm(dims)
            self.pos_trans_fc = nn.Linear(2 * dims, 2 * dims)
            self.pos_trans_norm = nn.LayerNorm(2 * dims)

    def pre_decoder(self, memory: Tensor, memory_mask: Optional[Tensor],
                    spatial_shapes: SpatialShapes) -> Tuple[Dict, Dict]:
        """Queries, their positions and initial references (2-d points, or boxes if two-stage).

        Returns:
            Decoder inputs and, in training, the encoder proposals' class scores ``(B, S,
            num_classes)`` and boxes ``(B, S, 4)`` for the head's two-stage loss.
        """
        batch, _, channels = memory.shape
        if self.as_two_stage:
            output_memory, proposals, valid = encoder_proposals(memory, memory_mask,
                                                                spatial_shapes)
            output_memory = self.memory_trans_norm(self.memory_trans_fc(output_memory))
            last = self.decoder.num_layers
            enc_outputs_class = self.bbox_head.cls_branches[last](output_memory)
            enc_outputs_coord_unact = self.bbox_head.reg_branches[last](output_memory) + proposals
            enc_outputs_coord = enc_outputs_coord_unact.sigmoid()
            # only the first class channel scores proposals (mmdet/official convention)
            topk = select_topk(enc_outputs_class[..., 0], valid, self.num_queries)
            topk_coords_unact = torch.gather(enc_outputs_coord_unact, 1,
                                             topk[..., None].expand(-1, -1, 4)).detach()
            reference_points = topk_coords_unact.sigmoid()
            pos_trans = self.pos_trans_norm(
                self.pos_trans_fc(proposal_pos_embed(topk_coords_unact, channels // 2)))
            query_pos, query = torch.split(pos_trans, channels, dim=2)
        else:
            enc_outputs_class, enc_outputs_coord = None, None
            query_pos, query = torch.split(self.query_embedding.weight, channels, dim=1)
            query_pos = query_pos[None].expand(batch, -1, -1)
            query = query[None].expand(batch, -1, -1)
            reference_points = self.reference_points_fc(query_pos).sigmoid()
        decoder_inputs = dict(query=query, query_pos=query_pos, memory=memory,
                              reference_points=reference_points)
        head_inputs = dict(enc_outputs_class=enc_outputs_class,
                           enc_outputs_coord=enc_outputs_coord) if self.training else dict()
        return decoder_inputs, head_inputs

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor], reference_points: Tensor,
                        spatial_shapes: SpatialShapes, level_start_index: Tensor,
                        valid_ratios: Tensor) -> Dict:
        """Decode; ``hidden_states`` ``(layers, B, Nq, C)``, ``references`` per layer + 1."""
        hidden_states, references = self.decoder(
            query, query_pos, memory, reference_points, spatial_shapes, level_start_index,
            valid_ratios, memory_mask=memory_mask,
            reg_branches=self.bbox_head.reg_branches if self.with_box_refine else None)
        return dict(hidden_states=hidden_states, references=[reference_points, *references])
