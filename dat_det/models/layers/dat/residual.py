"""Pieces wrapped around a residual branch: stochastic depth (timm's), layer scale, LPU."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

__all__ = ['DropPath', 'LayerScale', 'LocalPerceptionUnit', 'depthwise_conv_plus_input']


def depthwise_conv_plus_input(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``x + conv(x)`` as one convolution, for a depth-wise, stride-1, zero-padded "same" conv.

    The identity is folded into the kernel (1 added to its centre tap), so the sum costs no
    extra pass over the ``(B, C, H, W)`` map; equal to ``x + conv(x)`` up to float rounding,
    gradients included (the kernel's gradient is that of the folded kernel).
    """
    k_h, k_w = conv.kernel_size
    if (conv.groups != conv.in_channels or conv.in_channels != conv.out_channels
            or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.padding != (k_h // 2, k_w // 2) or k_h % 2 == 0 or k_w % 2 == 0
            or conv.padding_mode != 'zeros'):
        raise ValueError(f'cannot fold the identity into {conv}: needs a depth-wise, stride-1 '
                         'conv with an odd kernel and zero "same" padding')
    centre = torch.zeros(1, 1, k_h, k_w, dtype=conv.weight.dtype, device=conv.weight.device)
    centre[..., k_h // 2, k_w // 2] = 1.0
    return F.conv2d(x, conv.weight + centre, conv.bias, 1, conv.padding, 1, conv.groups)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): ``x + DWConv3x3(x)`` in one convolution."""
        return depthwise_conv_plus_input(self, x)
