"""Level layout of multi-scale deformable attention: level sizes and their index tensors."""
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor

from .msda_validation import check_level_sizes

#: ``(levels, 2)`` integer tensor of ``(H, W)``, or the same as Python int pairs
SpatialShapes = Union[Tensor, Sequence[Tuple[int, int]]]


def level_sizes(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """``[(H, W)]`` per level as Python ints; reads a tensor back (a device sync, and a graph
    break under ``torch.compile``: pass the sizes as ints where they are known)."""
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(h, w) for h, w in spatial_shapes]


def level_layout(sizes: Sequence[Tuple[int, int]],
                 device: 'torch.device | str | None' = None) -> Tuple[Tensor, Tensor]:
    """``spatial_shapes`` ``(levels, 2)`` and ``level_start_index`` ``(levels,)`` int64 tensors
    of the level sizes ``[(H, W)]`` (Python ints, checked positive)."""
    sizes = check_level_sizes(sizes)
    starts, total = [], 0
    for height, width in sizes:
        starts.append(total)
        total += height * width
    return (torch.tensor(sizes, dtype=torch.long, device=device).view(len(sizes), 2),
            torch.tensor(starts, dtype=torch.long, device=device))
