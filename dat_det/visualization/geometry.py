"""From normalized sampling coordinates to pixels of the original image."""
import math
from typing import Sequence, Tuple

import numpy as np
from torch import Tensor


def msda_to_pixels(locations: Tensor, batch_input_shape: Sequence[int],
                   scale_factor: Sequence[float]) -> np.ndarray:
    """``(..., 2)`` normalized (x, y) over the padded batch input -> original-image (x, y).

    Every level's map covers the padded input, so 1.0 is its right (bottom) edge.
    """
    height, width = batch_input_shape
    xy = locations.detach().cpu().double().numpy() * np.array([width, height])
    return xy / np.asarray(scale_factor[:2], dtype=np.float64)


def dat_to_pixels(positions: Tensor, map_size: Sequence[int], input_shape: Sequence[int],
                  scale_factor: Sequence[float]) -> np.ndarray:
    """``(..., 2)`` normalized (y, x) in [-1, 1] on a stage map -> original-image (x, y).

    -1 and 1 are the centres of the first and last cells (``align_corners=True``); a cell is
    ``stride`` pixels of the (stem-padded) input, the stride a power of two.
    """
    map_h, map_w = map_size
    stride = 2 ** round(math.log2(input_shape[0] / map_h))
    yx = positions.detach().cpu().double().numpy()
    cells = (yx + 1) / 2 * (np.array([map_h, map_w]) - 1) + 0.5
    xy = cells[..., ::-1] * stride
    return xy / np.asarray(scale_factor[:2], dtype=np.float64)


def inside(points: np.ndarray, image_shape: Tuple[int, int]) -> np.ndarray:
    """Boolean mask of the ``(..., 2)`` (x, y) points inside an ``(H, W)`` image."""
    height, width = image_shape
    return ((points[..., 0] >= 0) & (points[..., 0] <= width)
            & (points[..., 1] >= 0) & (points[..., 1] <= height))
