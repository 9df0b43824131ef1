"""A traceable inference forward of a dense one-stage detector (RTMDet, YOLOX, RetinaNet, ...).

mmdet's one-stage detectors compute their raw head outputs from the image with no
data-dependent Python: ``_forward(image)`` (backbone, neck, head) traces as it is, at any
image size, DAttention blocks inserted through ``WithDAttention`` included (their forward
hooks run during the trace). Box decoding and NMS stay outside the graph, as in mmdeploy's
split of such models.
"""
from typing import List, Sequence, Tuple

from torch import Tensor, nn


def flatten_outputs(outputs: Sequence) -> List[Tensor]:
    """``((kind0_level0, kind0_level1, ...), (kind1_level0, ...), ...)`` -> a flat list in that
    order (None entries, e.g. a head without objectness, are dropped)."""
    flat = []
    for kind in outputs:
        if isinstance(kind, Tensor):
            flat.append(kind)
        elif kind is not None:
            flat += [t for t in kind if t is not None]
    return flat


class DenseDetectorForExport(nn.Module):
    """Normalized image ``(1, 3, H, W)`` -> the head's raw outputs, one tensor per kind and
    level (RTMDet: class scores then box distances, per level; YOLOX: class scores, boxes,
    objectness), as the detector's tensor-mode forward gives them.

    Args:
        detector: an mmdet ``SingleStageDetector`` in eval mode.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        return tuple(flatten_outputs(self.detector._forward(image)))

    def output_names(self, image: Tensor) -> List[str]:
        """``output{k}_level{l}`` for kind ``k`` and level ``l`` of the head's outputs."""
        import torch

        with torch.no_grad():
            outputs = self.detector._forward(image)
        names = []
        for k, kind in enumerate(outputs):
            levels = [kind] if isinstance(kind, Tensor) else [t for t in kind if t is not None]
            names += [f'output{k}_level{lvl}' for lvl in range(len(levels))]
        return names
