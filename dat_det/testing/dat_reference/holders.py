"""Parameter holders of the DAT reference.

They only own parameters, under the names and shapes of the official modules (so that one state
dict serves the reference and dat_det); they have no ``forward``: the reference computes with
:mod:`.primitives`.
"""
import torch
from torch import nn


class ConvWeights(nn.Module):
    """``weight`` (out, in_per_group, k, k) and, optionally, ``bias`` (out,) of a conv."""

    def __init__(self, out_channels: int, in_per_group: int, kernel: int, bias: bool = True
                 ) -> None:
        super().__init__()
        fan_in = in_per_group * kernel * kernel
        self.weight = nn.Parameter(torch.randn(out_channels, in_per_group, kernel, kernel)
                                   * fan_in ** -0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None


class LinearWeights(nn.Module):
    """``weight`` (out, in) and, optionally, ``bias`` (out,) of a linear map."""

    def __init__(self, out_features: int, in_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * in_features ** -0.5)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None


class NormWeights(nn.Module):
    """``weight`` and ``bias`` (dim,) of a layer norm (eps 1e-5)."""

    eps = 1e-5

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class ChannelNormWeights(nn.Module):
    """A channel layer norm's parameters under ``norm.`` (the official ``LayerNormProxy``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = NormWeights(dim)


class LayerScaleWeights(nn.Module):
    """A per-channel scale (dim,) under ``name``: ``weight`` in the classification releases,
    ``gamma`` in DAT-Detection."""

    def __init__(self, dim: int, init_value: float, name: str = 'weight') -> None:
        super().__init__()
        self.name = name
        self.register_parameter(name, nn.Parameter(torch.full((dim,), float(init_value))))

    @property
    def scale(self) -> torch.Tensor:
        return getattr(self, self.name)


class Empty(nn.Module):
    """A place without parameters (an activation, or an option that is off) in an indexed list
    whose other entries must keep their official indices."""
