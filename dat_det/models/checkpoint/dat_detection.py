"""DAT-Detection (mmdet 2.x) COCO checkpoints -> dat_det detectors (mmdet 3.x).

The published DAT++ RetinaNet, Mask R-CNN and Cascade Mask R-CNN checkpoints hold the
state dict of an mmdet 2.26 detector (under ``state_dict``, with ``meta``). Their keys were
compared with the matching ``configs/dat`` models built here: ``neck.*`` (FPN),
``rpn_head.*`` (RPNHead), ``roi_head.bbox_head[.i].*`` (Shared2FCBBoxHead, ConvFCBBoxHead with
SyncBN), ``roi_head.mask_head[.i].*`` (FCNMaskHead) and ``bbox_head.*`` (RetinaHead) carry the
same names and shapes in mmdet 2.26 and 3.3, and dat_det's ``DAT`` keeps the official
backbone tree. What does change:

==============================================  ==============================================
DAT-Detection                                   dat_det
==============================================  ==============================================
``module.<key>`` (a wrapped model)              ``<key>``
``backbone.stages.i.layer_scales.j.gamma``      ``backbone.stages.i.layer_scales.j.weight``
``backbone.*.relative_position_index`` etc.     dropped: buffers dat_det recomputes
==============================================  ==============================================

Conversion is strict: a tensor the checkpoint has and the model does not use, a tensor the
model needs and the checkpoint lacks, or a shape that differs is a :class:`UserInputError`
naming the keys.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ...utils.errors import UserInputError
from .dat_official import RECOMPUTED_BUFFERS, extract_state_dict

# names listed in full in an error before the rest is only counted
_SHOWN_KEYS = 8


def rename_dat_detection_key(key: str) -> str:
    """A DAT-Detection state-dict key as dat_det names it (see the module table)."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    if key.startswith('backbone.') and '.layer_scales.' in key and key.endswith('.gamma'):
        key = key[:-len('gamma')] + 'weight'
    return key


def convert_dat_detection(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename every key of a DAT-Detection detector state dict to dat_det's names.

    Raises:
        UserInputError: two checkpoint keys map to the same name.
    """
    out: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    for key, value in state_dict.items():
        new_key = rename_dat_detection_key(key)
        if new_key in out:
            raise UserInputError(f'checkpoint keys {sources[new_key]!r} and {key!r} both '
                                 f'convert to {new_key!r}')
        out[new_key] = value
        sources[new_key] = key
    return out


def _listed(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:_SHOWN_KEYS])
    more = len(keys) - _SHOWN_KEYS
    return f'{shown}, ... ({more} more)' if more > 0 else shown


def _is_recomputed_buffer(key: str) -> bool:
    return key.startswith('backbone.') and key.rsplit('.', 1)[-1] in RECOMPUTED_BUFFERS


def match_to_model(converted: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """``converted`` restricted to ``target``'s keys (a model state dict), in its order.

    Only backbone buffers that dat_det recomputes may be left over; anything else is an error.

    Raises:
        UserInputError: unused or missing tensors, or shapes that differ (one line).
    """
    unused = [k for k in converted if k not in target and not _is_recomputed_buffer(k)]
    missing = [k for k in target if k not in converted]
    reshaped = [f'{k} {tuple(converted[k].shape)} vs {tuple(v.shape)}'
                for k, v in target.items() if k in converted and converted[k].shape != v.shape]
    problems: List[str] = []
    if unused:
        problems.append(f'{len(unused)} tensors the model does not use: {_listed(unused)}')
    if missing:
        problems.append(f'{len(missing)} tensors the model needs are missing: '
                        f'{_listed(missing)}')
    if reshaped:
        problems.append(f'{len(reshaped)} tensors of another shape (checkpoint vs model): '
                        f'{_listed(reshaped)}')
    if problems:
        raise UserInputError(f'{source} does not match the model: ' + '; '.join(problems)
                             + ' (is it the config of this checkpoint?)')
    return {k: converted[k] for k in target}


def load_dat_detection(model: nn.Module, checkpoint: Mapping,
                       source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """Convert a DAT-Detection checkpoint (or its state dict) and load it into ``model``
    strictly. Returns the converted state dict (keys in the model's order).

    Raises:
        UserInputError: see :func:`match_to_model`.
    """
    converted = convert_dat_detection(extract_state_dict(checkpoint))
    matched = match_to_model(converted, model.state_dict(), source)
    model.load_state_dict(matched, strict=True)
    return matched


def checkpoint_classes(checkpoint: Mapping) -> Optional[List[str]]:
    """The class names an mmdet 2.x checkpoint records in ``meta['CLASSES']``, if any."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    classes = meta.get('CLASSES') if isinstance(meta, Mapping) else None
    return list(classes) if classes is not None else None
