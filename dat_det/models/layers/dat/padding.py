"""Zero padding of channel-first maps to a multiple (stem, down-sampling, windows)."""
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tracing import onnx_exporting


def pad_to_multiple(x: torch.Tensor, multiple: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """Zero-pads ``(B, C, H, W)`` at the bottom/right so that H and W are multiples of
    ``multiple`` (an int, or ``(mh, mw)``); returns ``x`` itself when nothing is padded."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    if not torch.jit.is_scripting() and onnx_exporting():
        return _pad_to_multiple_traced(x, mh, mw)
    pad_h = (-x.shape[-2]) % mh
    pad_w = (-x.shape[-1]) % mw
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


@torch.jit.unused
def _pad_to_multiple_traced(x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
    """:func:`pad_to_multiple` by traced amounts (maybe 0), for export: a Python branch on
    the padding would keep the traced size's decision in the graph."""
    h, w = x.shape[-2:]
    pad_h = (mh - torch.as_tensor(h) % mh) % mh
    pad_w = (mw - torch.as_tensor(w) % mw) % mw
    return F.pad(x, (0, pad_w, 0, pad_h))


class PadToMultiple(nn.Module):
    """:func:`pad_to_multiple` as a module (the stem and 2x2 down-sampling of DAT)."""

    def __init__(self, divisor: int) -> None:
        super().__init__()
        self.divisor = divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.divisor)
