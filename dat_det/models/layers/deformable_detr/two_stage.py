"""Two-stage Deformable DETR: proposals from the encoder memory as decoder references."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from dat_det.ops import SpatialShapes, level_sizes

from .utils import inverse_sigmoid


def _proposal_level_sizes(spatial_shapes: SpatialShapes) -> list:
    """``[(H, W)]`` per level: Python ints, or, while tracing (ONNX export, ``torch.jit``) a
    ``spatial_shapes`` tensor, its 0-dim entries, which a trace records as values (``.tolist()``
    would freeze the traced size into the graph)."""
    if isinstance(spatial_shapes, Tensor) and (torch.jit.is_tracing()
                                               or torch.onnx.is_in_onnx_export()):
        return [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1])
                for lvl in range(spatial_shapes.shape[0])]
    return level_sizes(spatial_shapes)


def encoder_proposals(memory: Tensor, memory_mask: Optional[Tensor],
                      spatial_shapes: SpatialShapes) -> Tuple[Tensor, Tensor, Tensor]:
    """One proposal per memory position: a box at the pixel centre, 0.05 * 2**level wide.

    Centres are normalized by the valid size of each image at that level. Proposals on
    padding or touching the image border (any coordinate outside (0.01, 0.99)) are invalid:
    their memory is zeroed and their box logits are ``inf``.

    Export: traced with a ``spatial_shapes`` tensor of traced sizes (as
    :class:`dat_det.deployment.DeformableDETRForExport` passes), the proposals follow the
    image size of each run of the exported graph.

    Args:
        memory: ``(B, S, C)`` encoder output.
        memory_mask: ``(B, S)`` bool, True on padding, or ``None``.
        spatial_shapes: ``(levels, 2)`` (H, W), a tensor or Python int pairs.

    Returns:
        Memory with invalid positions zeroed ``(B, S, C)``, proposal logits ``(B, S, 4)``
        (cx, cy, w, h), and the validity ``(B, S)`` bool.
    """
    batch = memory.shape[0]
    proposals = []
    start = 0
    for lvl, (height, width) in enumerate(_proposal_level_sizes(spatial_shapes)):
        if memory_mask is not None:
            mask = memory_mask[:, start:start + height * width].view(batch, height, width)
            valid_h = (~mask[:, :, 0]).sum(1)
            valid_w = (~mask[:, 0, :]).sum(1)
            scale = torch.stack([valid_w, valid_h], -1).view(batch, 1, 1, 2)
        elif isinstance(height, Tensor):  # traced sizes
            scale = torch.stack([width, height]).to(memory.dtype).view(1, 1, 1, 2)
        else:
            scale = memory.new_tensor([width, height]).view(1, 1, 1, 2)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(height, device=memory.device).to(torch.float32),
            torch.arange(width, device=memory.device).to(torch.float32), indexing='ij')
        grid = torch.stack([grid_x, grid_y], -1)
        grid = (grid[None].expand(batch, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * (0.05 * 2.0 ** lvl)
        proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
        start += height * width
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1)
    if memory_mask is not None:
        valid = valid & ~memory_mask
    # the clamp keeps padded centres (beyond 1) finite before they are overwritten with inf
    logits = inverse_sigmoid(proposals, eps=0.0).masked_fill(~valid[..., None], float('inf'))
    memory = memory.masked_fill(~valid[..., None], 0.0)
    return memory, logits, valid


def select_topk(scores: Tensor, valid: Tensor, k: int) -> Tensor:
    """Indices ``(B, min(k, S))`` of the best valid positions of ``scores`` ``(B, S)``.

    Invalid positions (padding, border) rank below every valid one, so they are chosen
    only when an image has fewer than ``k`` valid positions. Inputs so small that the
    memory has fewer than ``k`` positions yield all ``S`` of them (fewer queries).
    """
    k = min(k, scores.shape[1])
    return torch.topk(scores.masked_fill(~valid, float('-inf')), k, dim=1)[1]
