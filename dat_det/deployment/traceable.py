"""Export-time swaps that keep a trace valid for every image size.

The deformable attention op needs none: it has its own export path (see
:mod:`dat_det.ops.msda_op`). The two left here swap a module-level function for an
equivalent one while the context is open; the exported graphs are compared with the
unmodified PyTorch model (see ``onnx_check``).
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dat_det.models.layers.dat import neighborhood_attention as na_module
from dat_det.models.layers.deformable_detr.utils import inverse_sigmoid

LevelSizes = List[Tuple[int, int]]


@contextmanager
def proposals_on_traced_sizes(level_sizes: LevelSizes) -> Iterator[None]:
    """Two-stage proposals built from ``level_sizes`` (traced ``(H, W)``) and the
    ``spatial_shapes`` tensor instead of ``spatial_shapes.tolist()``, which a trace would freeze.
    Same boxes as :func:`encoder_proposals` for unpadded images (no memory mask)."""
    from dat_det.models.detectors import deformable_detr as detector_module

    def proposals(memory: Tensor, memory_mask: Optional[Tensor],
                  spatial_shapes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        if memory_mask is not None:
            raise ValueError('exported two-stage proposals assume unpadded images')
        batch = memory.shape[0]
        levels = []
        for lvl, (height, width) in enumerate(level_sizes):
            ys = torch.arange(height, device=memory.device).to(memory.dtype) + 0.5
            xs = torch.arange(width, device=memory.device).to(memory.dtype) + 0.5
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
            grid = torch.stack([grid_x, grid_y], -1) / spatial_shapes[lvl].flip(0).to(
                memory.dtype)
            wh = torch.ones_like(grid) * (0.05 * 2.0 ** lvl)
            levels.append(torch.cat((grid, wh), -1).reshape(1, -1, 4).expand(batch, -1, -1))
        boxes = torch.cat(levels, 1)
        valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1)
        logits = inverse_sigmoid(boxes, eps=0.0).masked_fill(~valid[..., None], float('inf'))
        return memory.masked_fill(~valid[..., None], 0.0), logits, valid

    with _swapped(detector_module, 'encoder_proposals', proposals):
        yield


def gathered_neighborhood_attention(q: Tensor, k: Tensor, v: Tensor, kernel_size: int,
                                    rpb: Optional[Tensor] = None,
                                    attn_drop: float = 0.0) -> Tensor:
    """Neighbourhood attention by ``index_select`` (``Tensor.unfold`` has no ONNX export
    for dynamic sizes). ``q, k, v`` ``(B, heads, H, W, hd)``, q scaled -> same shape."""
    b, n, h, w, d = q.shape
    ks = kernel_size
    keys_h, rel_h = na_module.neighborhood_indices(h, ks, q.device)
    keys_w, rel_w = na_module.neighborhood_indices(w, ks, q.device)

    def gather(t: Tensor) -> Tensor:
        # (B, n, H, W, d) -> (B, n, H, W, k*k, d)
        t = t.index_select(2, keys_h.reshape(-1)).view(b, n, h, ks, w, d)
        t = t.index_select(4, keys_w.reshape(-1)).view(b, n, h, ks, w, ks, d)
        return t.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, n, h, w, ks * ks, d)

    logits = torch.einsum('bnhwd,bnhwkd->bnhwk', q, gather(k))
    if rpb is not None:
        bias = rpb[:, rel_h[:, :, None, None], rel_w[None, None, :, :]]  # (n, H, k, W, k)
        logits = logits + bias.permute(0, 1, 3, 2, 4).reshape(1, n, h, w, ks * ks)
    attn = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return torch.einsum('bnhwk,bnhwkd->bnhwd', attn, gather(v))


@contextmanager
def traceable_backbones() -> Iterator[None]:
    """DAT's neighbourhood attention through :func:`gathered_neighborhood_attention`."""
    with _swapped(na_module, 'neighborhood_attention_2d', gathered_neighborhood_attention):
        yield


@contextmanager
def _swapped(module, name: str, replacement) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)
