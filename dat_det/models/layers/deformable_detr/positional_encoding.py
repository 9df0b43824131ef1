"""Sine positional encodings of Deformable DETR (feature maps and proposal boxes)."""
import math
from typing import Optional

import torch
from torch import Tensor, nn


class SinePositionalEncoding(nn.Module):
    """2D sine/cosine encoding of pixel positions, counting valid (unpadded) pixels only.

    Args:
        num_feats: Channels per axis; the output has ``2 * num_feats`` channels (y then x).
        temperature: Wavelength base.
        normalize: Scale the positions of each image to ``[0, scale]`` over its valid size.
        scale: Range of normalized positions.
        eps: Guards the normalizing division.
        offset: Added to the 1-based positions before normalizing (-0.5 puts pixel centres
            at the middle of their cells).
    """

    def __init__(self,
                 num_feats: int = 128,
                 temperature: int = 10000,
                 normalize: bool = False,
                 scale: float = 2 * math.pi,
                 eps: float = 1e-6,
                 offset: float = 0.0) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: Optional[Tensor], input: Optional[Tensor] = None) -> Tensor:
        """Encode positions.

        Args:
            mask: ``(B, H, W)`` bool, True where padded; ``None`` means no padding, and then
                ``input`` ``(B, C, H, W)`` gives the shape.

        Returns:
            ``(B, 2 * num_feats, H, W)``.
        """
        if mask is not None:
            not_mask = (~mask.bool()).to(torch.int)
            y_embed = not_mask.cumsum(1, dtype=torch.float32)
            x_embed = not_mask.cumsum(2, dtype=torch.float32)
        elif input is not None:
            batch, _, height, width = input.shape
            y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=input.device)
            x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=input.device)
            y_embed = y_embed.view(1, -1, 1).expand(batch, height, width)
            x_embed = x_embed.view(1, 1, -1).expand(batch, height, width)
        else:
            raise ValueError('either mask or input must be given')
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=x_embed.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def proposal_pos_embed(proposals: Tensor,
                       num_pos_feats: int = 128,
                       temperature: int = 10000) -> Tensor:
    """Sine embedding of unnormalized (pre-sigmoid) boxes.

    Args:
        proposals: ``(B, N, 4)`` (cx, cy, w, h) logits.

    Returns:
        ``(B, N, 4 * num_pos_feats)``.
    """
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos = proposals.sigmoid() * (2 * math.pi)
    return _interleave_sin_cos(pos[..., None] / dim_t).flatten(2)


def _interleave_sin_cos(x: Tensor) -> Tensor:
    """``(..., F)`` -> ``(..., F)`` as sin of even and cos of odd channels, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)
