"""Plain tensor operations of the DAT reference, each written from its definition.

Convolutions are sums over kernel taps of strided slices of the zero-padded input, layer norms
and GELU are their formulas, and bilinear sampling adds the four neighbouring pixels with their
weights. Nothing here calls ``F.conv2d``, ``F.layer_norm``, ``F.grid_sample`` or a fused
attention kernel, so the reference shares no kernel with the layers it checks.
"""
import math

import torch


def zero_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """``(B, C, H, W)`` with rows/columns of zeros added on each side."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, h + top + bottom, w + left + right)
    out[:, :, top:top + h, left:left + w] = x
    return out


def pad_bottom_right_to(x: torch.Tensor, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Zeros appended at the bottom/right until H and W are multiples of the given sides."""
    h, w = x.shape[-2:]
    return zero_pad(x, 0, (-h) % multiple_h, 0, (-w) % multiple_w)


def _tap(x: torch.Tensor, dy: int, dx: int, stride: int, out_h: int, out_w: int
         ) -> torch.Tensor:
    """The input pixels that kernel tap (dy, dx) meets at each output position."""
    return x[:, :, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride]


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride: int, padding: int
           ) -> torch.Tensor:
    """Dense convolution ``(B, Cin, H, W)`` -> ``(B, Cout, Ho, Wo)``: ``out[o, i, j] = bias[o]
    + sum_{c, dy, dx} weight[o, c, dy, dx] * x_pad[c, i*s + dy, j*s + dx]``.
    """
    kh, kw = weight.shape[-2:]
    x = zero_pad(x, padding, padding, padding, padding)
    out_h = (x.shape[-2] - kh) // stride + 1
    out_w = (x.shape[-1] - kw) // stride + 1
    out = 0
    for dy in range(kh):
        for dx in range(kw):
            out = out + torch.einsum('oc,bchw->bohw', weight[:, :, dy, dx],
                                     _tap(x, dy, dx, stride, out_h, out_w))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride: int, padding: int
                     ) -> torch.Tensor:
    """Depth-wise convolution (one ``(kh, kw)`` kernel per channel, ``weight`` (C, 1, kh, kw)):
    ``out[c, i, j] = bias[c] + sum_{dy, dx} weight[c, 0, dy, dx] * x_pad[c, i*s + dy, j*s + dx]``.
    """
    kh, kw = weight.shape[-2:]
    x = zero_pad(x, padding, padding, padding, padding)
    out_h = (x.shape[-2] - kh) // stride + 1
    out_w = (x.shape[-1] - kw) // stride + 1
    out = 0
    for dy in range(kh):
        for dx in range(kw):
            out = out + weight[:, 0, dy, dx].view(1, -1, 1, 1) * _tap(x, dy, dx, stride,
                                                                       out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """A linear map of the channels of ``(B, Cin, H, W)``; ``weight`` (Cout, Cin[, 1, 1])."""
    out = torch.einsum('oc,bchw->bohw', weight.reshape(weight.shape[0], -1), x)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def channel_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float = 1e-5) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the channels of ``(B, C, H, W)``
    (biased variance, as ``nn.LayerNorm``)."""
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).square().mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, ``x * Phi(x)``."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(l - max) / sum exp(l - max)``."""
    e = torch.exp(logits - logits.max(dim=dim, keepdim=True).values.detach())
    return e / e.sum(dim=dim, keepdim=True)


def bilinear_sample(image: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``image`` ``(C, H, W)`` at fractional pixel coordinates
    ``row``/``col`` (any equal shapes S) -> ``(C, *S)``.

    The four pixels around a point contribute with weights ``(1 - fy)(1 - fx)``,
    ``(1 - fy) fx``, ``fy (1 - fx)`` and ``fy fx``; a pixel outside the image contributes zero.
    """
    _, h, w = image.shape
    top, left = torch.floor(row), torch.floor(col)
    fy, fx = row - top, col - left
    out = 0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            r, c = (top + dy).long(), (left + dx).long()
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            pixels = image[:, r.clamp(0, h - 1), c.clamp(0, w - 1)]  # (C, *S)
            out = out + pixels * (wy * wx * inside).unsqueeze(0)
    return out


def normalised_to_pixel(u: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """A coordinate in [-1, 1] as a pixel coordinate on an axis of ``size`` pixels: -1 and 1
    are the centres of the first and last pixels (``align_corners``), or their outer edges."""
    if align_corners:
        return (u + 1.0) / 2.0 * (size - 1)
    return ((u + 1.0) * size - 1.0) / 2.0


def block_average(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of each non-overlapping ``block x block`` cell of ``(B, C, H, W)`` (a partial last
    row/column of cells is dropped) -> ``(B, C, H // block, W // block)``."""
    b, c, h, w = x.shape
    rows, cols = h // block, w // block
    cells = x[:, :, :rows * block, :cols * block].reshape(b, c, rows, block, cols, block)
    return cells.mean(dim=(3, 5))
