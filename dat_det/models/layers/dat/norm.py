"""Channel-first LayerNorm."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map.

    The affine parameters live in ``self.norm`` (an ``nn.LayerNorm``) so that the state-dict
    keys (``...norm.weight``) match the official ``LayerNormProxy``; timm's ``LayerNorm2d``
    holds them at ``...weight``.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                         self.norm.eps)
        return x.permute(0, 3, 1, 2)
