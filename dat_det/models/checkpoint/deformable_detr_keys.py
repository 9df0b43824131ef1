"""State-dict key mappings between Deformable DETR implementations and ours.

Our detectors share backbone, neck, head and top-level names with mmdet's ``DeformableDETR``
and ``DINO`` (DINO's ``decoder.ref_point_head``, ``decoder.norm``, ``query_embedding`` and
``dn_query_generator`` too); only the encoder/decoder layers differ:

=====================================  ====================================
mmdet                                  ours
=====================================  ====================================
``*.layers.i.ffn.layers.0.0.*``        ``*.layers.i.ffn.fc1.*``
``*.layers.i.ffn.layers.1.*``          ``*.layers.i.ffn.fc2.*``
``*.layers.i.norms.k.*``               ``*.layers.i.norm{k+1}.*``
``decoder.layers.i.self_attn.attn.*``  ``decoder.layers.i.self_attn.*``
=====================================  ====================================

The official implementation (fundamentalvision/Deformable-DETR) wraps the transformer in
``transformer.*``, names the neck ``input_proj`` and the heads ``class_embed``/``bbox_embed``,
orders the decoder norms differently and predicts 91 COCO category ids instead of 80 labels.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

# category ids of the 80 COCO classes, in mmdet's label order
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)

_Rules = Sequence[Tuple[str, Callable[[re.Match], str]]]

_MMDET_TO_OURS: _Rules = (
    (r'^((?:en|de)coder\.layers\.\d+\.ffn\.)layers\.0\.0\.', lambda m: f'{m[1]}fc1.'),
    (r'^((?:en|de)coder\.layers\.\d+\.ffn\.)layers\.1\.', lambda m: f'{m[1]}fc2.'),
    (r'^((?:en|de)coder\.layers\.\d+\.)norms\.(\d+)\.', lambda m: f'{m[1]}norm{int(m[2]) + 1}.'),
    (r'^(decoder\.layers\.\d+\.self_attn\.)attn\.', lambda m: m[1]),
)
_OURS_TO_MMDET: _Rules = (
    (r'^((?:en|de)coder\.layers\.\d+\.ffn\.)fc1\.', lambda m: f'{m[1]}layers.0.0.'),
    (r'^((?:en|de)coder\.layers\.\d+\.ffn\.)fc2\.', lambda m: f'{m[1]}layers.1.'),
    (r'^((?:en|de)coder\.layers\.\d+\.)norm(\d+)\.', lambda m: f'{m[1]}norms.{int(m[2]) - 1}.'),
    (r'^(decoder\.layers\.\d+\.self_attn\.)(?!attn\.)', lambda m: f'{m[1]}attn.'),
)
_OFFICIAL_TO_OURS: _Rules = (
    (r'^backbone\.0\.body\.', lambda m: 'backbone.'),
    (r'^transformer\.level_embed$', lambda m: 'level_embed'),
    (r'^transformer\.reference_points\.', lambda m: 'reference_points_fc.'),
    (r'^transformer\.enc_output\.', lambda m: 'memory_trans_fc.'),
    (r'^transformer\.enc_output_norm\.', lambda m: 'memory_trans_norm.'),
    (r'^transformer\.pos_trans\.', lambda m: 'pos_trans_fc.'),
    (r'^transformer\.pos_trans_norm\.', lambda m: 'pos_trans_norm.'),
    (r'^transformer\.((?:en|de)coder\.layers\.\d+\.)linear(\d)\.',
     lambda m: f'{m[1]}ffn.fc{m[2]}.'),
    # decoder: official norm2 follows self-attention and norm1 cross-attention
    (r'^transformer\.(decoder\.layers\.\d+\.)norm1\.', lambda m: f'{m[1]}norm2.'),
    (r'^transformer\.(decoder\.layers\.\d+\.)norm2\.', lambda m: f'{m[1]}norm1.'),
    (r'^transformer\.((?:en|de)coder\.layers\.\d+\.)', lambda m: m[1]),
    (r'^query_embed\.', lambda m: 'query_embedding.'),
    (r'^class_embed\.(\d+)\.', lambda m: f'bbox_head.cls_branches.{m[1]}.'),
    (r'^bbox_embed\.(\d+)\.layers\.(\d+)\.',
     lambda m: f'bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}.'),
)
# duplicates of class_embed/bbox_embed that the official model keeps inside its decoder
_OFFICIAL_DUPLICATES = re.compile(r'^transformer\.decoder\.(class|bbox)_embed\.')


def _rename(key: str, rules: _Rules) -> str:
    for pattern, repl in rules:
        new_key, count = re.subn(pattern, repl, key, count=1)
        if count:
            return new_key
    return key


def from_mmdet(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """mmdet 3.x ``DeformableDETR`` / ``DINO`` state dict -> ours (values are shared, not
    copied)."""
    return OrderedDict((_rename(k, _MMDET_TO_OURS), v) for k, v in state_dict.items())


def to_mmdet(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Our state dict -> mmdet 3.x ``DeformableDETR`` / ``DINO`` (inverse of
    :func:`from_mmdet`)."""
    return OrderedDict((_rename(k, _OURS_TO_MMDET), v) for k, v in state_dict.items())


def from_official(state_dict: Mapping[str, Tensor],
                  num_backbone_levels: Optional[int] = None,
                  class_ids: Optional[Sequence[int]] = COCO_CATEGORY_IDS) -> Dict[str, Tensor]:
    """Official Deformable-DETR state dict (``checkpoint['model']``) -> ours.

    Args:
        state_dict: Official model weights.
        num_backbone_levels: How many ``input_proj`` entries map backbone outputs (the rest
            are extra stride-2 levels). Default: the number of 1x1 convs among them.
        class_ids: Rows of the classifiers to keep, in our label order (COCO: the 80
            category ids out of 91). ``None`` keeps all rows.

    Returns:
        Our state dict. ``input_proj`` convs keep their biases, so the neck must be built with
        ``bias=True`` to load them.
    """
    proj_convs = _input_proj_convs(state_dict)
    if num_backbone_levels is None:
        num_backbone_levels = sum(state_dict[f'input_proj.{i}.0.weight'].shape[-1] == 1
                                  for i in proj_convs)
    converted = OrderedDict()
    for key, value in state_dict.items():
        if _OFFICIAL_DUPLICATES.match(key):
            continue
        match = re.match(r'^input_proj\.(\d+)\.([01])\.(.+)$', key)
        if match:
            level, part, name = int(match[1]), match[2], match[3]
            layer = (f'convs.{level}' if level < num_backbone_levels
                     else f'extra_convs.{level - num_backbone_levels}')
            new_key = f"neck.{layer}.{'conv' if part == '0' else 'gn'}.{name}"
        else:
            new_key = _rename(key, _OFFICIAL_TO_OURS)
        if class_ids is not None and new_key.startswith('bbox_head.cls_branches.'):
            value = value[list(class_ids)]
        converted[new_key] = value
        if new_key.startswith('backbone.') and new_key.endswith('.running_var'):
            # the official frozen BatchNorm has no batch counter; torch's BatchNorm does
            converted[new_key[:-len('running_var')] + 'num_batches_tracked'] = torch.tensor(0)
    return converted


def _input_proj_convs(state_dict: Mapping[str, Tensor]) -> List[int]:
    return sorted({int(m[1]) for k in state_dict
                   if (m := re.match(r'^input_proj\.(\d+)\.0\.weight$', k))})
