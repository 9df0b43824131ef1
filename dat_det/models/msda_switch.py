"""One switch that runs any mmdet model's mmcv ``MultiScaleDeformableAttention`` on dat_det's op.

mmdet's transformer layers build mmcv's module directly (not through a registry), so a config
cannot choose another class for it. Instead, wrap the model config::

    model = dict(type='WithDatDetMSDA', model=dict(type='DINO', ...))   # the original model
    # or, inheriting an mmdet config:
    model = dict(_delete_=True, type='WithDatDetMSDA', model={{_base_.model}})

:func:`with_dat_det_msda` builds the inner model as usual and replaces every mmcv
``MultiScaleDeformableAttention`` in it by a :class:`DatDetMSDA`: a subclass of mmcv's module
with the same parameters (same state-dict keys, so checkpoints of the original model load as
they are), the same init and call signature, whose sampling runs on
:func:`dat_det.ops.multi_scale_deformable_attn`. Deformable DETR, DINO, DDQ-DETR, Grounding
DINO and Mask2Former's pixel decoder all build mmcv's module. In Python:
``use_dat_det_msda(model)``.

Code that reads the inner model's keys from ``cfg.model`` sees the wrapper instead (they are
under ``cfg.model.model``): mmdet's ``init_detector`` looks up ``cfg.model.backbone`` unless it
gets ``cfg_options``, so call it with ``cfg_options={}`` for such a config.
"""
from typing import Optional

from mmcv.ops import MultiScaleDeformableAttention as MMCVMultiScaleDeformableAttention
from mmdet.registry import MODELS
from torch import Tensor, nn

from dat_det.ops import multi_scale_deformable_attn


class DatDetMSDA(MMCVMultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` on dat_det's op.

    Parameters, buffers, init and ``forward`` arguments are mmcv's; only the sampling differs:
    it runs on :func:`dat_det.ops.multi_scale_deformable_attn` with ``backend`` (``None``: the
    ``DAT_DET_MSDA_BACKEND`` environment variable, else automatic), on every device, where
    mmcv uses its compiled CUDA op on GPUs and the ``grid_sample`` path elsewhere.

    Args:
        backend: Backend of the op.
        Other arguments: as mmcv's module.
    """

    def __init__(self, *args, backend: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.backend = backend

    @classmethod
    def from_mmcv(cls, module: MMCVMultiScaleDeformableAttention,
                  backend: Optional[str] = None) -> 'DatDetMSDA':
        """A :class:`DatDetMSDA` with the configuration, weights, device, dtype,
        ``requires_grad`` flags and train/eval mode of mmcv's ``module``."""
        converted = cls(
            embed_dims=module.embed_dims, num_heads=module.num_heads,
            num_levels=module.num_levels, num_points=module.num_points,
            im2col_step=module.im2col_step, dropout=module.dropout.p,
            batch_first=module.batch_first, norm_cfg=module.norm_cfg, init_cfg=module.init_cfg,
            value_proj_ratio=module.value_proj.out_features / module.embed_dims,
            backend=backend)
        param = next(module.parameters())
        converted.to(device=param.device, dtype=param.dtype)
        converted.load_state_dict(module.state_dict(), strict=True)
        for new, old in zip(converted.parameters(), module.parameters()):
            new.requires_grad_(old.requires_grad)
        converted._is_init = module._is_init
        return converted.train(module.training)

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """mmcv's forward: ``identity + dropout(attention(query + query_pos, value))``.

        Args:
            query: ``(B, Lq, C)`` (``(Lq, B, C)`` unless ``batch_first``).
            key: Unused (as in mmcv).
            value: ``(B, S, C)`` flattened levels (default: ``query``).
            identity: Residual added to the output (default: ``query``).
            query_pos: Added to ``query`` before the projections.
            key_padding_mask: ``(B, S)`` bool, True on padding.
            reference_points: ``(B, Lq, levels, 2)`` points or ``(B, Lq, levels, 4)`` boxes.
            spatial_shapes: ``(levels, 2)`` (H, W); level_start_index: ``(levels,)``.

        Returns:
            Same layout as ``query``.
        """
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        batch, num_query, _ = query.shape
        num_value = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_query, heads, levels, points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalize by that level's (W, H)
            normalizer = spatial_shapes.flip(-1).to(offsets.dtype)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError('reference_points must end in 2 (points) or 4 (boxes), got '
                             f'{tuple(reference_points.shape)}')
        output = multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                             locations, weights, backend=self.backend)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity


def use_dat_det_msda(model: nn.Module, backend: Optional[str] = None) -> nn.Module:
    """Replace, in place, every mmcv ``MultiScaleDeformableAttention`` of ``model`` by a
    :class:`DatDetMSDA` with the same weights; returns ``model``. Modules already converted
    get ``backend``. Hooks registered on the replaced modules are not carried over."""
    if isinstance(model, MMCVMultiScaleDeformableAttention):
        raise ValueError('use_dat_det_msda converts the modules inside a model; use '
                         'DatDetMSDA.from_mmcv for a single module')
    for name, module in list(model.named_modules()):
        if isinstance(module, DatDetMSDA):
            module.backend = backend
        elif isinstance(module, MMCVMultiScaleDeformableAttention):
            parent_name, _, child = name.rpartition('.')
            setattr(model.get_submodule(parent_name), child,
                    DatDetMSDA.from_mmcv(module, backend))
    return model


@MODELS.register_module(name='WithDatDetMSDA')
def with_dat_det_msda(model: dict, msda_backend: Optional[str] = None) -> nn.Module:
    """Build the mmdet ``model`` config and run its deformable attention on dat_det's op.

    Args:
        model: Any mmdet model config (``type='DINO'``, ``'Mask2Former'``, ...).
        msda_backend: Backend of the op (``None``: ``DAT_DET_MSDA_BACKEND``, else automatic).

    Returns:
        The built model itself (not a wrapper), its mmcv attention modules converted.
    """
    built = MODELS.build(model)
    if not any(isinstance(m, MMCVMultiScaleDeformableAttention) for m in built.modules()):
        raise ValueError(f'{type(built).__name__} has no mmcv MultiScaleDeformableAttention; '
                         'WithDatDetMSDA would change nothing')
    return use_dat_det_msda(built, msda_backend)


__all__ = ['DatDetMSDA', 'use_dat_det_msda', 'with_dat_det_msda']
