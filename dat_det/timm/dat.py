"""DAT / DAT++ as timm models: ``dat_tiny`` ... ``dat_pp_base``.

The trunk is the mmdet backbone's (:func:`dat_det.models.layers.dat.build_trunk`), under the
official module names, and the head is the official one (``cls_norm``: a channel LayerNorm
on the last stage's map, global average pooling, ``cls_head``: a linear layer). An official
ImageNet checkpoint therefore loads as it is, through timm's usual route::

    timm.create_model('dat_pp_tiny', pretrained=True,
                      pretrained_cfg_overlay=dict(file='dat_pp_tiny_in1k_224.pth'))

``features_only=True`` returns the stage maps ``(B, dims[i], H / 2^(i+2), W / 2^(i+2))``
each through a channel LayerNorm (``norms.i``), as the mmdet backbone and DAT-Detection do,
so the same file gives the same features as ``DAT(init_cfg=dict(type='Pretrained', ...))``
(these norms are not in classification checkpoints and start as identities in both).
``feature_norms=False`` gives the raw stage outputs instead, as does ``feature_cls='fx'``
(timm's FX feature extraction of the classifier's forward, which has no such norms).

Loading is strict, as for the mmdet backbone: a file tensor the model does not use, or a
model weight the file lacks, is an error naming them (``pretrained_strict=False`` loads what
fits and warns).

As timm's own families, the models script with ``torch.jit.script`` and trace with
``torch.fx`` (timm's ``create_feature_extractor``, ``feature_cls='fx'``): the attention
blocks, whose work depends on the map size (padding to windows, shift masks, query chunks,
neighbourhood tiles), are leaves of the FX graph, as is the zero padding of odd sizes.
``reset_classifier(0, '')`` / ``global_pool=''`` leave the unpooled ``(B, C, h, w)`` map.
"""
import functools
import logging
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    register_notrace_function,
    register_notrace_module,
)
from timm.models._features import feature_take_indices

from dat_det.models.checkpoint import (
    convert_official_dat_keys,
    extract_state_dict,
    match_official_state_dict,
)
from dat_det.models.layers.dat import (
    DeformableAttention,
    LayerNorm2d,
    LocalAttention,
    NeighborhoodAttention2D,
    TrunkStagesMixin,
    build_trunk,
    pad_to_multiple,
    resolve_arch,
)

__all__ = ['DeformableAttentionTransformer', 'checkpoint_filter_fn']

_logger = logging.getLogger(__name__)

# The linear classifier, timm's ``pretrained_cfg['classifier']``.
HEAD_PREFIX = 'cls_head.'
# Parameters that the official training excludes from weight decay (no_weight_decay_keywords).
NO_WEIGHT_DECAY_NAMES = ('rpe_table', 'relative_position_bias_table')

# FX leaves: their control flow depends on the map size (ShiftWindowAttention is a
# LocalAttention), which a symbolic trace cannot follow.
for _block in (LocalAttention, NeighborhoodAttention2D, DeformableAttention):
    register_notrace_module(_block)
register_notrace_function(pad_to_multiple)


class DeformableAttentionTransformer(TrunkStagesMixin, nn.Module):
    """DAT (CVPR 2022) / DAT++ image classifier with timm's model interface.

    Args:
        arch: preset (``dat-t/s/b``, ``dat++-t/s/b``) or a dict of architecture fields.
        img_size: image side at pre-training; sizes the deformable position tables (tables
            of other sizes in a checkpoint are resized bicubically on loading).
        patch_size: stride of the stem.
        in_chans: image channels.
        num_classes: classes of ``cls_head`` (0: no classifier).
        global_pool: timm pool type of the head (``avg`` as the official model; ``''``: no
            pooling, the head classifies each position of the map).
        expansion: MLP expansion ratio.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout in the MLPs and after the attention projections.
        attn_drop_rate: dropout of the attention weights.
        drop_path_rate: maximum stochastic depth rate (linear over all blocks).
        feature_norms: give each stage a channel LayerNorm (``norms.i``) applied to the maps
            of :meth:`forward_intermediates`, as the detection backbone has (default for
            ``features_only=True``).
        **arch_overrides: architecture fields overriding the preset (``dims``, ``depths``,
            ``stage_spec``, ``heads``, ``groups``, ...).
    """

    def __init__(self, arch: Union[str, Dict[str, Any]] = 'dat++-t', img_size: int = 224,
                 patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = 'avg', expansion: int = 4, drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, feature_norms: bool = False,
                 **arch_overrides) -> None:
        super().__init__()
        settings = resolve_arch(arch, **arch_overrides)
        self.arch_settings = settings
        dims = list(settings['dims'])
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.set_trunk(build_trunk(settings, img_size, patch_size, in_chans, expansion,
                                   proj_drop_rate, attn_drop_rate, drop_path_rate))
        self.norms = nn.ModuleList(LayerNorm2d(d) for d in dims) if feature_norms else None
        self.feature_info = [
            dict(num_chs=dims[i], reduction=patch_size * 2 ** i,
                 module=f'norms.{i}' if feature_norms else f'stages.{i}') for i in range(4)]

        self.cls_norm = LayerNorm2d(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)

    # timm's model interface ---------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the relative-position tables (no weight decay in the official recipe)."""
        return {name for name, _ in self.named_parameters()
                if name.rsplit('.', 1)[-1] in NO_WEIGHT_DECAY_NAMES}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay: stem, stages, head."""
        return dict(stem=r'^patch_proj',
                    blocks=[(r'^stages\.(\d+)', None), (r'^down_projs\.(\d+)', (0,)),
                            (r'^norms\.(\d+)', (1,)), (r'^cls_norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block while training (the stages' ``with_cp``)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.with_cp = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.cls_head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new ``cls_head`` for ``num_classes`` (0: none) and, unless None, a new pooling
        (``''``: none, so the head sees the ``(B, C, h, w)`` map)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool,
                                                    flatten=bool(global_pool))
            self.pooled = bool(global_pool)
        in_features = self.num_features * self.global_pool.feat_mult()
        self.cls_head = nn.Linear(in_features, num_classes) if num_classes > 0 \
            else nn.Identity()

    # forward ------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last stage's map after ``cls_norm``, (B, C, ~H/32, ~W/32)."""
        return self.cls_norm(self.run_stages(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, h, w) -> pooled (B, C) if ``pre_logits`` else logits (B, num_classes).

        Without pooling (``global_pool=''``): the map (B, C, h, w) itself, or the logits of
        each position (B, num_classes, h, w).
        """
        x = self.head_drop(self.global_pool(x))
        if pre_logits:
            return x
        if self.pooled:
            return self.cls_head(x)
        return self.cls_head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage maps ``(B, dims[i], H_i, W_i)`` of ``indices`` (timm's convention: an int n
        takes the last n stages), through ``norms.i`` when the model has feature norms, else
        raw (the last one through ``cls_norm`` when ``norm``). Unless ``intermediates_only``,
        also the output of :meth:`forward_features`."""
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt must be NCHW, got {output_fmt!r}')
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = max_index if stop_early or intermediates_only else len(self.stages) - 1
        taken = sorted(set(take_indices))
        x, maps, _ = self.run_stages(x, last, taken)
        by_stage = dict(zip(taken, maps))
        final = len(self.stages) - 1
        if self.norms is not None:
            intermediates = [self.norms[i](by_stage[i]) for i in take_indices]
        else:
            intermediates = [self.cls_norm(by_stage[i]) if norm and i == final else by_stage[i]
                             for i in take_indices]
        if intermediates_only:
            return intermediates
        # stop_early ends at the last taken stage, whose map cls_norm does not fit
        return (self.cls_norm(x) if last == final else x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True
                                  ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head and ``cls_norm``)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        self.down_projs = self.down_projs[:max_index]
        self.down_pads = self.down_pads[:max_index]
        if self.norms is not None:
            self.norms = nn.ModuleList(
                norm if i in take_indices else nn.Identity()
                for i, norm in enumerate(self.norms[:max_index + 1]))
        if prune_norm:
            self.cls_norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor],
                         model: DeformableAttentionTransformer,
                         strict: bool = True) -> Dict[str, torch.Tensor]:
    """An official DAT / DAT++ checkpoint (classification, DAT-Detection or a dat_det detector)
    as a state dict of ``model``: wrappers stripped, recomputed buffers dropped, position
    tables resized. The feature norms absent from a classification file, and the classifier
    absent from a backbone or detector file, keep their init (logged). ``cls_head`` is passed
    on as it is: timm drops it when ``num_classes`` differs from the file's.

    Raises:
        CheckpointMismatchError: ``strict`` (timm's ``pretrained_strict``) and a tensor of
            the file that ``model`` does not use (e.g. a detector's output norms for a model
            without ``feature_norms``), or a weight of ``model`` the file lacks.
    """
    state_dict = extract_state_dict(state_dict)
    model_state = model.state_dict()
    tensors, report = match_official_state_dict(state_dict, model_state, keep_classifier=True)
    # a head of another size (or none): timm's classifier adaptation decides, not this filter
    head = {k: v for k, v in convert_official_dat_keys(state_dict, keep_classifier=True).items()
            if k.startswith(HEAD_PREFIX) and k not in tensors}
    report.unexpected = [k for k in report.unexpected if not k.startswith(HEAD_PREFIX)]
    report.mismatched = [k for k in report.mismatched if not k.startswith(HEAD_PREFIX)]
    if strict and not report.fits:
        hint = 'pass pretrained_strict=False to timm.create_model to load what fits'
        if any(k.startswith('norms.') for k in report.unexpected):
            hint += ', or feature_norms=True to use the output norms'
        raise report.error(hint)
    for line in report.log_lines():
        _logger.info(line)
    if report.warning():
        _logger.warning(report.warning())
    for key in report.norms_at_init + report.classifier_at_init:
        tensors[key] = model_state[key]  # timm loads strictly: keep these at their init
    tensors.update(head)
    return tensors


def _create_dat(variant: str, arch: str, pretrained: bool = False,
                **kwargs) -> DeformableAttentionTransformer:
    feature_cfg = dict(feature_cls='getter', out_indices=(0, 1, 2, 3))
    feature_cfg.update(kwargs.pop('feature_cfg', None) or {})
    if kwargs.get('features_only'):
        feature_cls = kwargs.get('feature_cls', feature_cfg['feature_cls'])
        if feature_cls == 'getter':
            kwargs.setdefault('feature_norms', True)
        elif kwargs.get('feature_norms'):
            # only forward_intermediates (the getter) runs the norms; FX traces forward
            raise ValueError(f"feature_norms=True needs feature_cls='getter', not "
                             f'{feature_cls!r} (which gives the raw stage maps)')
    strict = kwargs.get('pretrained_strict', True)
    return build_model_with_cfg(
        DeformableAttentionTransformer, variant, pretrained, arch=arch,
        pretrained_filter_fn=functools.partial(checkpoint_filter_fn, strict=strict),
        feature_cfg=feature_cfg, **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    # No hosted weights: official files are passed with pretrained_cfg_overlay=dict(file=...).
    return dict(url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
                crop_pct=0.875, interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN,
                std=IMAGENET_DEFAULT_STD, first_conv='patch_proj.0', classifier='cls_head',
                license='apache-2.0', **kwargs)


default_cfgs = generate_default_cfgs({
    f'{name}.in1k': _cfg() for name in ('dat_tiny', 'dat_small', 'dat_base', 'dat_pp_tiny',
                                        'dat_pp_small', 'dat_pp_base')})


@register_model
def dat_tiny(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT-T (CVPR 2022): local / shifted-window and deformable attention, 96-768 channels."""
    return _create_dat('dat_tiny', 'dat-t', pretrained, **kwargs)


@register_model
def dat_small(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT-S: DAT-T with 18 blocks in stage 3."""
    return _create_dat('dat_small', 'dat-s', pretrained, **kwargs)


@register_model
def dat_base(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT-B: 128-1024 channels, 18 blocks in stage 3."""
    return _create_dat('dat_base', 'dat-b', pretrained, **kwargs)


@register_model
def dat_pp_tiny(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT++-T: overlapping patch embeddings, neighbourhood and deformable attention,
    convolutional MLPs and local perception units, 64-512 channels."""
    return _create_dat('dat_pp_tiny', 'dat++-t', pretrained, **kwargs)


@register_model
def dat_pp_small(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT++-S: 96-768 channels."""
    return _create_dat('dat_pp_small', 'dat++-s', pretrained, **kwargs)


@register_model
def dat_pp_base(pretrained: bool = False, **kwargs) -> DeformableAttentionTransformer:
    """DAT++-B: 128-1024 channels."""
    return _create_dat('dat_pp_base', 'dat++-b', pretrained, **kwargs)
