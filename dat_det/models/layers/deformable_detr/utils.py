"""Helpers shared by the Deformable DETR encoder, decoder and two-stage proposals."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dat_det.ops import SpatialShapes, level_layout, level_sizes


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of ``x`` clamped to ``[0, 1]``, with ``eps`` guarding both ends."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def padding_mask(batch_input_shape: Tuple[int, int], img_shapes: Sequence[Tuple[int, int]],
                 device: torch.device) -> Optional[Tensor]:
    """``(B, H, W)`` bool mask, True on padding; ``None`` when no image is padded."""
    height, width = batch_input_shape
    if all(h == height and w == width for h, w in img_shapes):
        return None
    mask = torch.ones((len(img_shapes), height, width), dtype=torch.bool, device=device)
    for i, (h, w) in enumerate(img_shapes):
        mask[i, :h, :w] = False
    return mask


def level_masks(mask: Optional[Tensor], feats: Sequence[Tensor]) -> List[Optional[Tensor]]:
    """Nearest-downsample an image padding mask ``(B, H, W)`` to every level's size."""
    if mask is None:
        return [None] * len(feats)
    return [F.interpolate(mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
            for feat in feats]


def valid_ratios(mask: Tensor) -> Tensor:
    """Valid fraction of a level, ``(B, H, W)`` padding mask -> ``(B, 2)`` as (w, h)."""
    _, height, width = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / height
    valid_w = (~mask[:, 0, :]).sum(1).float() / width
    return torch.stack([valid_w, valid_h], -1)


def level_start_index(spatial_shapes: SpatialShapes) -> Tensor:
    """``(levels, 2)`` (H, W) -> ``(levels,)`` start of each level in the flattened sequence."""
    if not isinstance(spatial_shapes, Tensor):
        return level_layout(spatial_shapes)[1]
    return torch.cat((spatial_shapes.new_zeros((1, )), spatial_shapes.prod(1).cumsum(0)[:-1]))


def encoder_reference_points(spatial_shapes: SpatialShapes, valid_ratios: Tensor) -> Tensor:
    """Reference points of the encoder queries: the centres of every level's pixels.

    Centres are normalized by the level's *valid* size, so the valid area spans ``[0, 1]``,
    and then mapped into every level by that level's valid ratios.

    Args:
        spatial_shapes: ``(levels, 2)`` (H, W), a tensor or Python int pairs (then nothing
            is read back from a tensor).
        valid_ratios: ``(B, levels, 2)`` (w, h) valid fractions.

    Returns:
        ``(B, S, levels, 2)`` normalized (x, y), ``S = sum(H_l * W_l)``.
    """
    device = valid_ratios.device
    points = []
    for lvl, (height, width) in enumerate(level_sizes(spatial_shapes)):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
            torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
            indexing='ij')
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


def decoder_reference_inputs(reference_points: Tensor, valid_ratios: Tensor) -> Tensor:
    """Map decoder references ``(B, Nq, 2|4)`` into every level: ``(B, Nq, levels, 2|4)``."""
    if reference_points.shape[-1] == 4:
        valid_ratios = torch.cat([valid_ratios, valid_ratios], -1)
    return reference_points[:, :, None] * valid_ratios[:, None]
