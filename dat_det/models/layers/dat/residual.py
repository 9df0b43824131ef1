"""Pieces wrapped around a residual branch: stochastic depth (timm's), layer scale, LPU."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

__all__ = ['DropPath', 'LayerScale', 'LocalPerceptionUnit', 'check_foldable',
           'depthwise_conv_plus_input', 'same_depthwise_conv_plus_input']


def depthwise_conv_plus_input(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``x + conv(x)`` as one convolution, for a depth-wise, stride-1, zero-padded "same" conv.

    The identity is folded into the kernel (1 added to its centre tap), so the sum costs no
    extra pass over the ``(B, C, H, W)`` map; equal to ``x + conv(x)`` up to float rounding,
    gradients included (the kernel's gradient is that of the folded kernel).
    """
    check_foldable(conv)
    return same_depthwise_conv_plus_input(x, conv.weight, conv.bias, conv.padding, conv.groups)


def check_foldable(conv: nn.Conv2d) -> None:
    """Raises ValueError unless ``conv`` is what :func:`same_depthwise_conv_plus_input` computes:
    depth-wise, stride 1, dilation 1, an odd kernel and zero "same" padding."""
    k_h, k_w = conv.kernel_size
    if (conv.groups != conv.in_channels or conv.in_channels != conv.out_channels
            or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.padding != (k_h // 2, k_w // 2) or k_h % 2 == 0 or k_w % 2 == 0
            or conv.padding_mode != 'zeros'):
        raise ValueError(f'cannot fold the identity into {conv}: needs a depth-wise, stride-1 '
                         'conv with an odd kernel and zero "same" padding')


def same_depthwise_conv_plus_input(x: torch.Tensor, weight: torch.Tensor,
                                   bias: Optional[torch.Tensor], padding: Tuple[int, int],
                                   groups: int) -> torch.Tensor:
    """``x + conv(x)`` on ``x`` (B, C, H, W) for the depth-wise "same" conv of ``weight``
    (C, 1, 2 * padding[0] + 1, 2 * padding[1] + 1) and ``bias`` (C,) or None (``groups`` = C);
    see :func:`depthwise_conv_plus_input`.

    The centre tap is built from ints (not from the weight's shape) and without item
    assignment, so FX, TorchScript and ONNX export (which needs a kernel of known shape) take it.
    """
    p_h, p_w = padding
    row = (torch.arange(2 * p_h + 1, device=weight.device) == p_h).to(weight.dtype)
    col = (torch.arange(2 * p_w + 1, device=weight.device) == p_w).to(weight.dtype)
    centre = row[:, None] * col[None, :]  # 1 at the centre, 0 elsewhere
    return F.conv2d(x, weight + centre, bias, 1, [p_h, p_w], 1, groups)


class LayerScale(nn.Module):
    """Per-channel scale of a ``(B, C, H, W)`` residual branch (parameter ``weight``).

    Not timm's ``LayerScale2d``: its parameter is ``gamma``, the official DAT++ one ``weight``.
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(-1, 1, 1)


class LocalPerceptionUnit(nn.Conv2d):
    """DAT++'s local perception unit: ``x + DWConv3x3(x)`` on ``(B, C, H, W)``.

    Subclasses ``nn.Conv2d`` so its keys are the official ``local_perception_units.i.weight``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        check_foldable(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): ``x + DWConv3x3(x)`` in one convolution."""
        return same_depthwise_conv_plus_input(x, self.weight, self.bias, self.padding,
                                              self.groups)
