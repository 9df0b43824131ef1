"""Official DAT / DAT++ checkpoints (classification or DAT-Detection) -> dat_det ``DAT``.

The backbone keeps the official module tree (``patch_proj``, ``stages.i.attns.j...``,
``down_projs``), so the conversion only strips wrapper prefixes, drops the classifier and
buffers that are recomputed, and resizes position-bias tables to the configured sizes.
"""
from typing import Dict, List, Mapping, NamedTuple, Tuple

import torch
import torch.nn as nn
from timm.layers import resize_rel_pos_bias_table_simple

PREFIXES = ('module.', 'backbone.')
CLASSIFIER_PREFIXES = ('cls_head.', 'cls_norm.', 'head.', 'neck.')
# Buffers of the official modules that dat_det recomputes (relative index, shift masks, grids).
RECOMPUTED_BUFFERS = ('relative_position_index', 'attn_mask', 'q_grid', 'reference')


class LoadReport(NamedTuple):
    """Keys that did not match after conversion and tables that were interpolated."""

    missing: List[str]
    unexpected: List[str]
    resized: List[str]

    def message(self) -> str:
        lines = [f'missing keys ({len(self.missing)}): {self.missing}',
                 f'unexpected keys ({len(self.unexpected)}): {self.unexpected}']
        if self.resized:
            lines.append(f'bicubically resized ({len(self.resized)}): {self.resized}')
        return 'DAT checkpoint loaded; ' + '; '.join(lines)


def extract_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint: under ``model``, ``state_dict``, or the mapping itself."""
    for key in ('model', 'state_dict'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return dict(checkpoint[key])
    return dict(checkpoint)


def convert_official_dat_keys(state_dict: Mapping[str, torch.Tensor],
                              keep_classifier: bool = False) -> Dict[str, torch.Tensor]:
    """Strip ``module.``/``backbone.``, drop recomputed buffers and (unless
    ``keep_classifier``, as the timm classifiers need) the classifier.

    DAT-Detection's ``LayerScale.gamma`` becomes ``weight`` (the classification name).
    A detector checkpoint (keys under ``backbone.``) keeps only its backbone.
    """
    has_backbone = any(k.startswith(('backbone.', 'module.backbone.')) for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if has_backbone:
            if not key.startswith('backbone.'):
                continue
            key = key[len('backbone.'):]
        if key.startswith(CLASSIFIER_PREFIXES) and not keep_classifier:
            continue
        if key.rsplit('.', 1)[-1] in RECOMPUTED_BUFFERS:
            continue
        if '.layer_scales.' in key and key.endswith('.gamma'):
            key = key[:-len('gamma')] + 'weight'
        out[key] = value
    return out


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
    differs from ``target`` (a model state dict). Returns the new dict and the resized keys."""
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


def load_official_dat(model: nn.Module, checkpoint: Mapping) -> LoadReport:
    """Load an official DAT/DAT++ checkpoint (or state dict) into ``model`` non-strictly.

    Entries whose shape still mismatches after resizing are reported as unexpected
    (with their shapes) instead of raising inside ``load_state_dict``.
    """
    state_dict = convert_official_dat_keys(extract_state_dict(checkpoint))
    target = model.state_dict()
    state_dict, resized = resize_position_tables(state_dict, target)
    mismatched = [f'{k} {tuple(v.shape)}!={tuple(target[k].shape)}'
                  for k, v in state_dict.items() if k in target and v.shape != target[k].shape]
    state_dict = {k: v for k, v in state_dict.items()
                  if k not in target or v.shape == target[k].shape}
    result = model.load_state_dict(state_dict, strict=False)
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys) + mismatched,
                      resized)
