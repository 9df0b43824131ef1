"""Official DAT / DAT++ checkpoints (classification or DAT-Detection) -> dat_det ``DAT``.

The backbone keeps the official module tree (``patch_proj``, ``stages.i.attns.j...``,
``down_projs``), so the conversion only strips wrapper prefixes, renames DAT-Detection's
LayerScale ``gamma`` to ``weight``, drops the buffers that are recomputed (by name:
:data:`RECOMPUTED_BUFFERS`) and, for the detection backbone, the classifier
(:data:`CLASSIFIER_PREFIXES`), and resizes position-bias tables to the configured sizes.

Loading is strict: a checkpoint tensor left unused (no such key, or a shape that resizing
cannot fix) or a model tensor left unfilled is a :class:`CheckpointMismatchError` naming the
keys, unless a partial load is asked for (``strict=False``). Two absences are expected and
logged on their own lines instead: detection output norms ``norms.i`` that the checkpoint
has no trace of (all of them in a classification checkpoint), and the classifier in a
backbone or detector checkpoint loaded into a classifier.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import resize_rel_pos_bias_table_simple

from dat_det.utils.errors import UserInputError

PREFIXES = ('module.', 'backbone.')
# The classifier of the official classification model (DAT v1 and DAT++ releases alike).
CLASSIFIER_PREFIXES = ('cls_head.', 'cls_norm.')
# Buffers of the official modules that dat_det recomputes (relative index, shift masks, grids).
RECOMPUTED_BUFFERS = ('relative_position_index', 'attn_mask', 'q_grid', 'reference')
# Per-stage output norms of the detection backbone (DAT-Detection and dat_det): not part of a
# classification checkpoint.
DETECTION_NORMS_PREFIX = 'norms.'
# Keys named per category in a one-line error (the rest are counted); 20 name every rpb
# of a DAT++ model without them.
KEYS_SHOWN = 20


class CheckpointMismatchError(UserInputError):
    """An official DAT checkpoint that does not fit the model it is loaded into."""


@dataclass
class LoadReport:
    """What loading an official checkpoint did, key by key (model keys after conversion)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)  # 'key (ckpt shape)!=(model shape)'
    resized: List[str] = field(default_factory=list)
    norms_at_init: List[str] = field(default_factory=list)
    classifier_at_init: List[str] = field(default_factory=list)
    classifier_dropped: List[str] = field(default_factory=list)
    recomputed_dropped: List[str] = field(default_factory=list)
    other_parts: List[str] = field(default_factory=list)  # a detector's neck, heads, ...
    checkpoint_has_norms: bool = False  # some output norm (a detector's checkpoint)

    @property
    def fits(self) -> bool:
        """Every checkpoint tensor used and every model tensor filled (or expected absent)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The missing, unused and mismatched keys in one line ('' when it fits)."""
        parts = []
        for keys, what in ((self.missing, 'model tensor{} not in the checkpoint'),
                           (self.unexpected, 'checkpoint tensor{} unused by this model'),
                           (self.mismatched, 'tensor{} of another shape')):
            if keys:
                parts.append(f'{len(keys)} {what.format("s" * (len(keys) > 1))}: '
                             f'{_some(keys)}')
        return '; '.join(parts)

    def error(self, hint: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f'checkpoint does not fit this DAT model: {self.problems()}; {hint}')

    def log_lines(self) -> List[str]:
        """What a user should read after loading, one fact per line."""
        lines = [f'official DAT checkpoint: {len(self.loaded)} tensors loaded']
        if self.resized:
            lines.append(f'position tables resized bicubically to this model '
                         f'({len(self.resized)}): {", ".join(self.resized)}')
        if self.recomputed_dropped:
            names = sorted({k.rsplit('.', 1)[-1] for k in self.recomputed_dropped})
            lines.append(f'buffers this model recomputes, not loaded '
                         f'({len(self.recomputed_dropped)}): {", ".join(names)}')
        if self.classifier_dropped:
            lines.append('not used by the detection backbone: the ImageNet classifier '
                         + ', '.join(_module_names(self.classifier_dropped)))
        if self.other_parts:
            lines.append(f'detector checkpoint: its backbone is loaded, the '
                         f'{len(self.other_parts)} tensors of '
                         f'{", ".join(_module_names(self.other_parts))} are not used')
        if self.norms_at_init:
            source = 'this checkpoint' if self.checkpoint_has_norms else 'an ImageNet checkpoint'
            lines.append(f'not in {source}: the detection output '
                         f'{_norms_phrase(self.norms_at_init)}')
        if self.classifier_at_init:
            lines.append('not in a backbone checkpoint: the classifier '
                         f'{", ".join(_module_names(self.classifier_at_init))} starts at its init')
        return lines

    def warning(self) -> str:
        """The line to warn with after a partial load ('' when the checkpoint fits)."""
        return '' if self.fits else f'partial load (strict=False): {self.problems()}'

    def message(self) -> str:
        return '; '.join(self.log_lines() + ([self.warning()] if self.warning() else []))


def _some(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:KEYS_SHOWN])
    return shown if len(keys) <= KEYS_SHOWN else f'{shown} and {len(keys) - KEYS_SHOWN} more'


def _module_names(keys: Sequence[str]) -> List[str]:
    return sorted({k.split('.', 1)[0] for k in keys})


def _norm_index(key: str) -> str:
    """``norms.2.norm.weight`` -> ``'2'``."""
    return key.split('.')[1]


def _norms_phrase(keys: Sequence[str]) -> str:
    """``norms.1.norm.weight``, ``norms.2...``, ``norms.3...`` -> ``norms norms.1..3 start``."""
    indices = sorted({int(_norm_index(k)) for k in keys})
    if len(indices) == 1:
        return f'norm norms.{indices[0]} starts at its init'
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f'norms norms.{indices[0]}..{indices[-1]} start at their init'
    return f'norms {", ".join(f"norms.{i}" for i in indices)} start at their init'


def extract_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint: under ``model``, ``state_dict``, or the mapping itself."""
    for key in ('model', 'state_dict'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return dict(checkpoint[key])
    return dict(checkpoint)


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str
                  ) -> Dict[str, torch.Tensor]:
    """The entries under ``prefix`` with it stripped (mmengine's ``Pretrained`` ``prefix``)."""
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointMismatchError(f'no checkpoint tensor starts with prefix {prefix!r}')
    return out


def _split_official_keys(state_dict: Mapping[str, torch.Tensor], keep_classifier: bool
                         ) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Backbone tensors under dat_det's names, and a report of what was set aside."""
    report = LoadReport()
    has_backbone = any(k.startswith(('backbone.', 'module.backbone.')) for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if has_backbone:
            if not key.startswith('backbone.'):
                report.other_parts.append(key)
                continue
            key = key[len('backbone.'):]
        if key.rsplit('.', 1)[-1] in RECOMPUTED_BUFFERS:
            report.recomputed_dropped.append(key)
            continue
        if key.startswith(CLASSIFIER_PREFIXES) and not keep_classifier:
            report.classifier_dropped.append(key)
            continue
        if '.layer_scales.' in key and key.endswith('.gamma'):  # DAT-Detection's LayerScale
            key = key[:-len('gamma')] + 'weight'
        out[key] = value
    return out, report


def convert_official_dat_keys(state_dict: Mapping[str, torch.Tensor],
                              keep_classifier: bool = False) -> Dict[str, torch.Tensor]:
    """Strip ``module.``/``backbone.``, drop recomputed buffers and (unless
    ``keep_classifier``, as the timm classifiers need) the classifier.

    DAT-Detection's ``LayerScale.gamma`` becomes ``weight`` (the classification name).
    A detector checkpoint (keys under ``backbone.``) keeps only its backbone.
    """
    return _split_official_keys(state_dict, keep_classifier)[0]


def _resize_rpe_table(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(heads, 2h-1, 2w-1) -> (heads, 2H-1, 2W-1), bicubic (timm's table resizing)."""
    window = ((shape[-2] + 1) // 2, (shape[-1] + 1) // 2)
    return resize_rel_pos_bias_table_simple(value.float(), window, tuple(shape)).to(value.dtype)


def _resize_bias_table(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Swin-style ``((2W-1)^2, heads)`` table -> ``((2W'-1)^2, heads)``, bicubic (timm's)."""
    n = value.shape[0]
    side, new_side = round(n ** 0.5), round(shape[0] ** 0.5)
    if side * side != n or new_side * new_side != shape[0]:
        raise ValueError(f'relative_position_bias_table of shape {tuple(value.shape)} -> '
                         f'{tuple(shape)}: only square windows can be resized')
    window = ((new_side + 1) // 2,) * 2
    return resize_rel_pos_bias_table_simple(value.float(), window, tuple(shape)).to(value.dtype)


def resize_position_tables(state_dict: Dict[str, torch.Tensor],
                           target: Mapping[str, torch.Tensor]
                           ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Bicubically resize ``rpe_table`` / ``relative_position_bias_table`` entries whose shape
    differs from ``target`` (a model state dict). Returns the new dict and the resized keys.

    natten's ``rpb`` is not resized: its size follows the kernel, not the image."""
    out, resized = dict(state_dict), []
    for key, value in state_dict.items():
        if key not in target or target[key].shape == value.shape:
            continue
        name = key.rsplit('.', 1)[-1]
        if name == 'rpe_table' and value.dim() == 3 and target[key].dim() == 3 \
                and value.shape[0] == target[key].shape[0] \
                and all(s % 2 == 1 for s in (*value.shape[1:], *target[key].shape[1:])):
            # (heads, 2h-1, 2w-1) relative tables only; fixed_pe tables cannot be resized
            out[key] = _resize_rpe_table(value, target[key].shape)
        elif name == 'relative_position_bias_table' \
                and value.shape[1] == target[key].shape[1]:
            out[key] = _resize_bias_table(value, target[key].shape)
        else:
            continue
        resized.append(key)
    return out, resized


def match_official_state_dict(checkpoint: Mapping, target: Mapping[str, torch.Tensor],
                              keep_classifier: bool = False
                              ) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """An official checkpoint (or state dict) against a model state dict ``target``.

    Returns the tensors that fit ``target`` (converted, tables resized) and the report; the
    expected absences (``norms_at_init``, ``classifier_at_init``) are not in the dict.
    A model key counts as expected absent only when the checkpoint has no key of that part
    at all: an output norm ``norms.i`` for a checkpoint without any ``norms.i.`` key (none in
    an ImageNet checkpoint; a detector's lacks those of the stages it did not output), the
    classifier (``keep_classifier``) for one without any classifier key.
    """
    state_dict, report = _split_official_keys(extract_state_dict(checkpoint), keep_classifier)
    state_dict, report.resized = resize_position_tables(state_dict, target)
    fitting = {}
    for key, value in state_dict.items():
        if key not in target:
            report.unexpected.append(key)
        elif value.shape != target[key].shape:
            report.mismatched.append(f'{key} {tuple(value.shape)}!={tuple(target[key].shape)}')
        else:
            fitting[key] = value
    norms_in_checkpoint = {_norm_index(k) for k in state_dict
                           if k.startswith(DETECTION_NORMS_PREFIX)}
    report.checkpoint_has_norms = bool(norms_in_checkpoint)
    has_classifier = any(k.startswith(CLASSIFIER_PREFIXES) for k in state_dict)
    for key in target:
        if key in state_dict:
            continue
        if key.startswith(DETECTION_NORMS_PREFIX) \
                and _norm_index(key) not in norms_in_checkpoint:
            report.norms_at_init.append(key)
        elif key.startswith(CLASSIFIER_PREFIXES) and keep_classifier and not has_classifier:
            report.classifier_at_init.append(key)
        else:
            report.missing.append(key)
    report.loaded = list(fitting)
    return fitting, report


def load_official_dat(model: nn.Module, checkpoint: Mapping, strict: bool = True,
                      hint: Optional[str] = None) -> LoadReport:
    """Load an official DAT/DAT++ checkpoint (or state dict) into the backbone ``model``.

    Args:
        strict: refuse a checkpoint that does not fit (see :class:`LoadReport.fits`);
            ``False`` loads what fits and reports the rest.
        hint: how the caller's user asks for a partial load (ends the error message).

    Raises:
        CheckpointMismatchError: ``strict`` and a tensor unused, unfilled or mismatched.
    """
    tensors, report = match_official_state_dict(checkpoint, model.state_dict())
    if strict and not report.fits:
        raise report.error(hint or 'pass strict=False to load the tensors that fit')
    model.load_state_dict(tensors, strict=False)
    return report


def convert_official_checkpoint(checkpoint: Mapping, arch: str, pretrain_img_size: int = 224,
                                arch_options: Optional[Mapping] = None, strict: bool = True,
                                hint: Optional[str] = None
                                ) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """An official checkpoint as dat_det backbone weights for ``DAT(arch, ...)``.

    Loads it into that backbone as :func:`load_official_dat` does (strict unless asked) and
    returns the tensors that came from the checkpoint, under the backbone's keys, tables
    resized (expected absences such as the detection norms stay absent).
    """
    from dat_det.models.backbones.dat import DAT  # the backbone imports this module
    model = DAT(arch=arch, pretrain_img_size=pretrain_img_size, **dict(arch_options or {}))
    report = load_official_dat(model, checkpoint, strict=strict, hint=hint)
    state = model.state_dict()
    return {k: state[k] for k in report.loaded}, report
