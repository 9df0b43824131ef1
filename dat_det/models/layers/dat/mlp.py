"""Feed-forward blocks of DAT (plain) and DAT++ (with a depth-wise convolution)."""
import torch
import torch.nn as nn

from .residual import check_foldable, same_depthwise_conv_plus_input


class TransformerMLP(nn.Module):
    """Linear -> GELU -> Linear on a ``(B, C, H, W)`` map (official ``TransformerMLP``).

    Not timm's ``Mlp``: the official keys are ``chunk.linear1/linear2``, timm's ``fc1/fc2``.
    """

    def __init__(self, channels: int, expansion: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.chunk = nn.Sequential()
        self.chunk.add_module('linear1', nn.Linear(channels, hidden))
        self.chunk.add_module('act', nn.GELU())
        self.chunk.add_module('drop1', nn.Dropout(drop))
        self.chunk.add_module('linear2', nn.Linear(hidden, channels))
        self.chunk.add_module('drop2', nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransformerMLPWithConv(nn.Module):
    """1x1 conv -> (+ depth-wise 3x3 conv) -> GELU -> 1x1 conv (official DAT++ MLP)."""

    def __init__(self, channels: int, expansion: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Sequential(nn.Conv2d(channels, hidden, 1, 1, 0))
        self.drop1 = nn.Dropout(drop)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, channels, 1, 1, 0))
        self.drop2 = nn.Dropout(drop)
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        check_foldable(self.dwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.drop1(self.linear1(x))
        # x + dwc(x) in one conv: the 4x-wide hidden map is not read and written once more
        x = self.act(same_depthwise_conv_plus_input(x, self.dwc.weight, self.dwc.bias,
                                                    self.dwc.padding, self.dwc.groups))
        return self.drop2(self.linear2(x))


class TransformerMLPWithConvV1(nn.Module):
    """1x1 conv -> depth-wise 3x3 conv -> GELU -> 1x1 conv (the DAT v1 release's MLP with conv).

    Differs from :class:`TransformerMLPWithConv` (DAT++): the depth-wise conv replaces its
    input instead of being added to it, and ``linear1``/``linear2`` are bare convolutions
    (official keys ``linear1.weight``, not ``linear1.0.weight``).
    """

    def __init__(self, channels: int, expansion: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Conv2d(channels, hidden, 1, 1, 0)
        self.drop1 = nn.Dropout(drop)
        self.act = nn.GELU()
        self.linear2 = nn.Conv2d(hidden, channels, 1, 1, 0)
        self.drop2 = nn.Dropout(drop)
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.drop1(self.act(self.dwc(self.linear1(x))))
        return self.drop2(self.linear2(x))
