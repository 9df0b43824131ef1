"""Pieces wrapped around a residual branch: stochastic depth (timm's), layer scale, LPU."""
import torch
import torch.nn as nn
from timm.layers import DropPath

__all__ = ['DropPath', 'LayerScale', 'LocalPerceptionUnit']


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
        return x + super().forward(x)
