"""Pieces wrapped around a residual branch: stochastic depth, layer scale, LPU."""
import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample (as timm's ``DropPath``)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep_prob)
        return x * mask.div_(keep_prob)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class LayerScale(nn.Module):
    """Per-channel scale of a ``(B, C, H, W)`` residual branch (parameter ``weight``)."""

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
