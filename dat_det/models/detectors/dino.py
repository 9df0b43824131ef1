"""DINO on dat_det's multi-scale deformable attention, registered in mmdet."""
from typing import Dict, Optional, Tuple

import torch
from mmdet.models.detectors import DINO
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from torch import Tensor, nn

from ..layers.deformable_detr import DINODecoder, encoder_proposals, select_topk
from .msda_transformer import MSDATransformerMixin


@MODELS.register_module()
class MSDADINO(MSDATransformerMixin, DINO):
    """DINO (Zhang et al., ICLR 2023) whose encoder and decoder are dat_det layers.

    Backbone, neck, :class:`mmdet.models.DINOHead` (matching and denoising losses), the
    contrastive denoising queries (:class:`mmdet.models.layers.CdnQueryGenerator`), the
    loss/predict flow and the config schema are mmdet's ``DINO``; the encoder is our Deformable
    DETR encoder and the decoder :class:`DINODecoder`, both on
    :func:`dat_det.ops.multi_scale_deformable_attn`. Weights convert to and from mmdet's
    ``DINO`` with :func:`dat_det.models.checkpoint.from_mmdet` / ``to_mmdet``.

    Differences from mmdet's ``DINO``:

    - mixed query selection ranks valid encoder positions only, never padding (as our
      two-stage Deformable DETR);
    - the decoder's query-position encoding has ``embed_dims / 2`` features per box
      coordinate, so decoders narrower than 256 channels work (mmdet fixes 128).

    Args:
        msda_backend: Backend of the op for every attention; ``None`` lets it choose.
        Other arguments: as :class:`mmdet.models.DINO` (``num_feature_levels``,
            ``num_queries``, ``dn_cfg``, ...; ``with_box_refine`` and ``as_two_stage`` must
            be True).

    Levels, encoder and weight init are shared with :class:`MSDADeformableDETR` through
    :class:`MSDATransformerMixin`, in mmdet's order; :meth:`init_detector_layers` is the
    query side.
    """

    def init_detector_layers(self) -> None:
        """Xavier for the memory transform and the content queries, a normal
        ``level_embed``. As mmdet's ``DINO``."""
        for weight in (self.memory_trans_fc.weight, self.query_embedding.weight):
            nn.init.xavier_uniform_(weight)
        nn.init.normal_(self.level_embed)

    def _init_layers(self) -> None:
        """Build positional encoding, encoder, decoder, content queries, memory transform."""
        self._build_encoder_decoder(DINODecoder)
        dims = self.embed_dims
        # content queries only: DINO's positions come from the selected boxes
        self.query_embedding = nn.Embedding(self.num_queries, dims)
        self.level_embed = nn.Parameter(torch.empty(self.num_feature_levels, dims))
        self.memory_trans_fc = nn.Linear(dims, dims)
        self.memory_trans_norm = nn.LayerNorm(dims)

    def pre_decoder(self, memory: Tensor, memory_mask: Optional[Tensor], spatial_shapes: Tensor,
                    batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Mixed query selection, plus the denoising queries in training.

        The ``num_queries`` best encoder proposals (by their best class score) give the
        decoder's initial boxes; the content queries are learned. In training the
        contrastive denoising queries (noised ground truth) go first, with the attention mask
        that keeps them from the matching queries and from each other.

        Returns:
            Decoder inputs (``query`` ``(B, Nq, C)``, ``memory``, ``reference_points``
            ``(B, Nq, 4)``, ``dn_mask`` ``(Nq, Nq)`` or None) and, in training, the head's
            inputs: the selected proposals' scores ``(B, num_queries, classes)`` and boxes
            ``(B, num_queries, 4)``, and the denoising meta.
        """
        batch, num_positions, _ = memory.shape
        if num_positions < self.num_queries:
            raise ValueError(f'the encoder has {num_positions} positions, fewer than '
                             f'num_queries={self.num_queries}: use larger images')
        output_memory, proposals, valid = encoder_proposals(memory, memory_mask,
                                                            spatial_shapes)
        output_memory = self.memory_trans_norm(self.memory_trans_fc(output_memory))
        last = self.decoder.num_layers
        enc_outputs_class = self.bbox_head.cls_branches[last](output_memory)
        enc_outputs_coord_unact = self.bbox_head.reg_branches[last](output_memory) + proposals
        topk = select_topk(enc_outputs_class.max(-1)[0], valid, self.num_queries)
        topk_score = torch.gather(
            enc_outputs_class, 1, topk[..., None].expand(-1, -1, enc_outputs_class.shape[-1]))
        topk_coords_unact = torch.gather(enc_outputs_coord_unact, 1,
                                         topk[..., None].expand(-1, -1, 4))
        topk_coords = topk_coords_unact.sigmoid()
        topk_coords_unact = topk_coords_unact.detach()

        query = self.query_embedding.weight[None].expand(batch, -1, -1)
        if self.training:
            dn_label_query, dn_bbox_query, dn_mask, dn_meta = self.dn_query_generator(
                batch_data_samples)
            query = torch.cat([dn_label_query, query], dim=1)
            reference_points = torch.cat([dn_bbox_query, topk_coords_unact], dim=1)
        else:
            reference_points = topk_coords_unact
            dn_mask, dn_meta = None, None
        decoder_inputs = dict(query=query, memory=memory,
                              reference_points=reference_points.sigmoid(), dn_mask=dn_mask)
        head_inputs = dict(enc_outputs_class=topk_score, enc_outputs_coord=topk_coords,
                           dn_meta=dn_meta) if self.training else dict()
        return decoder_inputs, head_inputs

    def forward_decoder(self, query: Tensor, memory: Tensor, memory_mask: Optional[Tensor],
                        reference_points: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, valid_ratios: Tensor,
                        dn_mask: Optional[Tensor] = None) -> Dict:
        """Decode; ``hidden_states`` ``(layers, B, Nq, C)``, ``references`` per layer + 1."""
        hidden_states, references = self.decoder(
            query, memory, reference_points, spatial_shapes, level_start_index, valid_ratios,
            self.bbox_head.reg_branches, memory_mask=memory_mask, self_attn_mask=dn_mask)
        # mmdet adds label_embedding * 0 to the states when the batch size equals num_queries;
        # that is not needed: the denoising queries are embedded (possibly none) in every
        # training step, which keeps the embedding in the graph for DDP
        return dict(hidden_states=hidden_states, references=references)
