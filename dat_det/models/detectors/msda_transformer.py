"""What Deformable DETR and DINO share on dat_det's layers: levels, encoder and their init.

mmdet's ``DINO`` subclasses its ``DeformableDETR`` and inherits this part. Ours cannot take
that route: :class:`MSDADINO` must subclass mmdet's ``DINO`` (denoising queries, its
``forward_transformer`` and head flow) and :class:`MSDADeformableDETR` mmdet's
``DeformableDETR``; both mix in :class:`MSDATransformerMixin` ahead of their mmdet parent.
"""
from typing import Dict, Optional, Tuple, Type

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.structures import OptSampleList
from torch import Tensor, nn

from dat_det.ops import SpatialShapes

from ..layers.deformable_detr import (
    DeformableEncoder,
    MSDeformAttn,
    SinePositionalEncoding,
    level_masks,
    level_start_index,
    padding_mask,
    valid_ratios,
)


class MSDATransformerMixin:
    """Encoder side of a Deformable-DETR-style detector whose attention is
    :class:`MSDeformAttn` (a mixin for subclasses of mmdet's
    ``DeformableDETR`` / ``DINO``, listed before them).

    It adds the ``msda_backend`` argument, builds the positional encoding, encoder and a
    given decoder with the detector's level count and backend, flattens the levels
    (:meth:`pre_transformer`), runs the encoder, and initialises the weights in mmdet's order
    with the attention's own init.

    Args:
        msda_backend: Backend of the op for every attention; ``None`` lets it choose.
    """

    # set by mmdet's DeformableDETR.__init__ / _init_layers
    num_feature_levels: int
    embed_dims: int
    positional_encoding: SinePositionalEncoding
    encoder: DeformableEncoder
    level_embed: nn.Parameter

    def __init__(self, *args, msda_backend: Optional[str] = None, **kwargs) -> None:
        # read by _init_layers, which mmdet's __init__ calls
        self.msda_backend = msda_backend
        super().__init__(*args, **kwargs)

    def _with_levels(self, coder_cfg: Dict, attn_key: str) -> Dict:
        """Copy of an encoder/decoder config whose attention (``layer_cfg[attn_key]``) gets
        the detector's ``num_feature_levels`` and backend unless it sets them; a different
        level count is an error."""
        layer_cfg = dict(coder_cfg.get('layer_cfg') or {})
        attn_cfg = {'num_levels': self.num_feature_levels, 'backend': self.msda_backend,
                    **(layer_cfg.get(attn_key) or {})}
        if attn_cfg['num_levels'] != self.num_feature_levels:
            raise ValueError(f"{attn_key} has num_levels={attn_cfg['num_levels']} but the "
                             f'detector has num_feature_levels={self.num_feature_levels}')
        return {**coder_cfg, 'layer_cfg': {**layer_cfg, attn_key: attn_cfg}}

    def _build_encoder_decoder(self, decoder_type: Type[nn.Module]) -> None:
        """Replace the ``positional_encoding`` / ``encoder`` / ``decoder`` configs that mmdet
        stored with the modules, and set ``embed_dims``."""
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = DeformableEncoder(**self._with_levels(self.encoder, 'self_attn_cfg'))
        self.decoder = decoder_type(**self._with_levels(self.decoder, 'cross_attn_cfg'))
        self.embed_dims = self.encoder.embed_dims
        num_feats = self.positional_encoding.num_feats
        if 2 * num_feats != self.embed_dims:
            raise ValueError(f'embed_dims ({self.embed_dims}) must be twice num_feats '
                             f'({num_feats})')

    def init_weights(self) -> None:
        """Children's own init, Xavier for every encoder/decoder matrix, the 米 init of every
        attention, then the detector's own layers (:meth:`init_detector_layers`).

        This is the order of mmdet's ``DeformableDETR`` / ``DINO`` ``init_weights``, with our
        attention class where theirs re-inits mmcv's, so a seed draws the random stream in
        their order. Their method is not called: it skips our attention, and re-initing it
        afterwards would draw its projections after the query layers instead.
        """
        super(DeformableDETR, self).init_weights()  # past the DETRs: children's own init
        for coder in (self.encoder, self.decoder):
            for param in coder.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.init_weights()
        self.init_detector_layers()

    def init_detector_layers(self) -> None:
        """Init of the layers outside the encoder and decoder (queries, two-stage layers,
        ``level_embed``); each detector defines its own."""
        raise NotImplementedError

    def pre_transformer(self, mlvl_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Flatten the levels and build masks, positions, valid ratios.

        Args:
            mlvl_feats: ``levels`` maps ``(B, C, H_l, W_l)``.

        Returns:
            Encoder inputs (``feat``/``feat_pos`` ``(B, S, C)``, ``feat_mask`` ``(B, S)`` or
            None, ``spatial_shapes`` ``[(H, W)]`` Python ints, ``level_start_index``,
            ``valid_ratios`` ``(B, levels, 2)``) and the decoder inputs shared with them.
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
