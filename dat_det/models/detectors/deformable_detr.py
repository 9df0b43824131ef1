"""Deformable DETR on dat_det's multi-scale deformable attention, registered in mmdet."""
from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from torch import Tensor, nn

from dat_det.ops import SpatialShapes

from ..layers.deformable_detr import (
    DeformableDecoder,
    DeformableEncoder,
    MultiScaleDeformableAttention,
    SinePositionalEncoding,
    encoder_proposals,
    level_masks,
    level_start_index,
    padding_mask,
    proposal_pos_embed,
    select_topk,
    valid_ratios,
)


@MODELS.register_module()
class MSDADeformableDETR(DeformableDETR):
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
    """

    def __init__(self, *args, msda_backend: Optional[str] = None, **kwargs) -> None:
        self.msda_backend = msda_backend
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        """Build positional encoding, encoder, decoder, queries and two-stage layers."""
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = DeformableEncoder(**self._with_levels(self.encoder, 'self_attn_cfg'))
        self.decoder = DeformableDecoder(**self._with_levels(self.decoder, 'cross_attn_cfg'))
        self.embed_dims = self.encoder.embed_dims
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError(f'embed_dims ({self.embed_dims}) must be twice num_feats '
                             f'({self.positional_encoding.num_feats})')
        if not self.as_two_stage:
            # split into query_pos and query in pre_decoder
            self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims * 2)
        self.level_embed = nn.Parameter(torch.empty(self.num_feature_levels, self.embed_dims))
        if self.as_two_stage:
            self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
            self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
            self.pos_trans_fc = nn.Linear(self.embed_dims * 2, self.embed_dims * 2)
            self.pos_trans_norm = nn.LayerNorm(self.embed_dims * 2)
        else:
            self.reference_points_fc = nn.Linear(self.embed_dims, 2)

    def _with_levels(self, coder_cfg: Dict, attn_key: str) -> Dict:
        """Copy of an encoder/decoder config whose attention knows levels and backend."""
        coder_cfg = dict(coder_cfg)
        layer_cfg = dict(coder_cfg.get('layer_cfg') or {})
        attn_cfg = dict(layer_cfg.get(attn_key) or {})
        attn_cfg.setdefault('num_levels', self.num_feature_levels)
        attn_cfg.setdefault('backend', self.msda_backend)
        if attn_cfg['num_levels'] != self.num_feature_levels:
            raise ValueError(f"{attn_key} has num_levels={attn_cfg['num_levels']} but the "
                             f'detector has num_feature_levels={self.num_feature_levels}')
        layer_cfg[attn_key] = attn_cfg
        coder_cfg['layer_cfg'] = layer_cfg
        return coder_cfg

    def init_transformer_weights(self) -> None:
        """Submodules' own init, Xavier for the encoder/decoder matrices, the 米 init for
        every attention (shared with :class:`MSDADINO`)."""
        super(DeformableDETR, self).init_weights()
        for coder in self.encoder, self.decoder:
            for p in coder.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()

    def init_weights(self) -> None:
        """Xavier for the transformer matrices, the 米 init for every attention."""
        self.init_transformer_weights()
        if self.as_two_stage:
            nn.init.xavier_uniform_(self.memory_trans_fc.weight)
            nn.init.xavier_uniform_(self.pos_trans_fc.weight)
        else:
            nn.init.xavier_uniform_(self.reference_points_fc.weight)
            nn.init.zeros_(self.reference_points_fc.bias)
        nn.init.normal_(self.level_embed)

    def pre_transformer(self, mlvl_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Flatten the levels and build masks, positions, valid ratios.

        Args:
            mlvl_feats: ``levels`` maps ``(B, C, H_l, W_l)``.

        Returns:
            Encoder inputs (``feat``/``feat_pos`` ``(B, S, C)``, ``feat_mask`` ``(B, S)`` or
            None, ``spatial_shapes`` ``[(H, W)]`` Python ints, ``level_start_index``,
            ``valid_ratios``
            ``(B, levels, 2)``) and the decoder inputs shared with them.
        """
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f'got {len(mlvl_feats)} feature levels, the detector expects '
                             f'{self.num_feature_levels}')
        if batch_data_samples is None:
            raise ValueError('batch_data_samples are needed for the padding masks')
        mask = padding_mask(batch_data_samples[0].batch_input_shape,
                            [s.img_shape for s in batch_data_samples], mlvl_feats[0].device)
        masks = level_masks(mask, mlvl_feats)

        feat_flatten, pos_flatten = [], []
        for lvl, (feat, lvl_mask) in enumerate(zip(mlvl_feats, masks)):
            pos = self.positional_encoding(lvl_mask, input=feat)
            feat_flatten.append(feat.flatten(2).transpose(1, 2))
            pos_flatten.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl])
        feat_flatten = torch.cat(feat_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 1)
        # level sizes stay Python ints (no tensor to read back: no device sync, and nothing
        # data-dependent for torch.compile); the op builds its index tensors from them
        spatial_shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in mlvl_feats]
        start_index = level_start_index(spatial_shapes).to(feat_flatten.device)
        if mask is None:
            mask_flatten = None
            ratios = feat_flatten.new_ones(feat_flatten.shape[0], len(mlvl_feats), 2)
        else:
            mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
            ratios = torch.stack([valid_ratios(m) for m in masks], 1)

        encoder_inputs = dict(feat=feat_flatten, feat_mask=mask_flatten, feat_pos=pos_flatten,
                              spatial_shapes=spatial_shapes, level_start_index=start_index,
                              valid_ratios=ratios)
        decoder_inputs = dict(memory_mask=mask_flatten, spatial_shapes=spatial_shapes,
                              level_start_index=start_index, valid_ratios=ratios)
        return encoder_inputs, decoder_inputs

    def forward_encoder(self, feat: Tensor, feat_mask: Optional[Tensor], feat_pos: Tensor,
                        spatial_shapes: SpatialShapes, level_start_index: Tensor,
                        valid_ratios: Tensor) -> Dict:
        """Encode the flattened levels into ``memory`` ``(B, S, C)``."""
        memory = self.encoder(feat, feat_pos, spatial_shapes, level_start_index, valid_ratios,
                              padding_mask=feat_mask)
        return dict(memory=memory, memory_mask=feat_mask, spatial_shapes=spatial_shapes)

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
