"""The formulation details of DAT (v1 release, CVPR 2022) and DAT++ as explicit switches.

Every detail in which the two releases differ is one field of :class:`Details`, and so is every
convention the tests guard that both share (shift mask, bias index rules, LPU, sampling
convention). ``DETAILS['v1']`` and ``DETAILS['v2']`` are the two releases; a test replaces one
field (``dataclasses.replace``) to show that the comparison with dat_det then fails.

Positions are normalised to [-1, 1] per axis, (y, x) order, with -1 and 1 at the centres of the
first and last pixels of the sampled map.
"""
import dataclasses
from typing import Dict

import torch


@dataclasses.dataclass(frozen=True)
class Details:
    """Switches of the reference (defaults: the DAT++ release).

    Attributes:
        key_grid: key reference point of cell ``i`` of ``n``: ``(i + 0.5) / n * 2 - 1``
            (``'n'``, v1) or ``(i + 0.5) / (n - 1) * 2 - 1`` (``'n-1'``, v2; 0 when n == 1).
        query_grid: query positions of the relative-position bias: the key grid of the query
            map (``'keys'``, v1) or ``i / (n - 1) * 2 - 1`` (``'corners'``, v2; 0 when n == 1).
        offset_range: offsets with a positive range factor are ``tanh(o) * factor / n``
            (``'n'``, v1) or ``tanh(o) * factor / (n - 1)`` (``'n-1'``, v2; 1 when n == 1).
        zero_factor: offset range factor 0: raw offsets are added (``'raw'``, v1) or none at
            all (``'none'``, v2).
        negative_factor: negative factor: positions ``tanh(reference + offset)`` (``'tanh'``,
            v1) or ``clamp(reference + offset, -1, 1)`` (``'clamp'``, v2).
        offset_padding: the offset network's depth-wise conv is padded by ``ksize // 2``
            (``'always'``, v1) or by 0 when ``ksize == stride`` (``'unless_ksize_is_stride'``).
        conv_stem: ``use_conv_patches`` stem: one 7x7 conv of stride 4 (``'one_7x7'``, v1) or
            two 3x3 convs of stride 2 (``'two_3x3'``, v2).
        stem_activation: the two-conv stem has a GELU between its convs.
        stem_padding: the conv stems pad by ``kernel // 2`` (3 for 7x7, 1 for 3x3).
        dwc_mlp: ``use_dwc_mlps`` MLP: ``act(dwc(linear1(x)))`` (``'replace'``, v1) or
            ``act(h + dwc(h))``, ``h = linear1(x)`` (``'residual'``, v2).
        sampling_align_corners: keys are sampled with -1/1 at pixel centres (both releases).
        bias_displacement: the deformable bias table is read at ``(query - key) / 2``
            (``'query-key'``, both releases) or at the reverse (``'key-query'``).
        window_bias: window attention reads ``table[(yq - yk + Wh - 1) * (2Ww - 1) + xq - xk +
            Ww - 1]`` (``'query-key'``, Swin's index) or the reverse (``'key-query'``).
        shift_mask: shifted windows mask (-100) query/key pairs of different regions.
        neighborhood_bias: neighbourhood attention adds ``rpb[s - i + k - 1]`` for the key at
            ``s`` of the query at ``i`` (``'natten'``) or ``rpb[i - s + k - 1]``
            (``'mirrored'``).
        lpu: blocks of stages with ``use_lpus`` start with ``x + dwconv3x3(x)``.
        layer_scale: residual branches of stages with ``layer_scale_values > 0`` are scaled.
    """

    key_grid: str = 'n-1'
    query_grid: str = 'corners'
    offset_range: str = 'n-1'
    zero_factor: str = 'none'
    negative_factor: str = 'clamp'
    offset_padding: str = 'unless_ksize_is_stride'
    conv_stem: str = 'two_3x3'
    stem_activation: bool = True
    stem_padding: bool = True
    dwc_mlp: str = 'residual'
    sampling_align_corners: bool = True
    bias_displacement: str = 'query-key'
    window_bias: str = 'query-key'
    shift_mask: bool = True
    neighborhood_bias: str = 'natten'
    lpu: bool = True
    layer_scale: bool = True


DETAILS: Dict[str, Details] = {
    'v1': Details(key_grid='n', query_grid='keys', offset_range='n', zero_factor='raw',
                  negative_factor='tanh', offset_padding='always', conv_stem='one_7x7',
                  dwc_mlp='replace'),
    'v2': Details(),
}


def key_axis(n: int, details: Details, dtype: torch.dtype) -> torch.Tensor:
    """Key reference coordinates of the ``n`` cells of one axis, ``(n,)``."""
    centres = torch.tensor([i + 0.5 for i in range(n)], dtype=dtype)
    if details.key_grid == 'n':
        return centres / n * 2 - 1
    if n == 1:  # the DAT++ release divides by zero here; the single cell is the centre
        return torch.zeros(1, dtype=dtype)
    return centres / (n - 1) * 2 - 1


def query_axis(n: int, details: Details, dtype: torch.dtype) -> torch.Tensor:
    """Query coordinates of the ``n`` cells of one axis for the position bias, ``(n,)``."""
    if details.query_grid == 'keys':
        return key_axis(n, details, dtype)
    if n == 1:
        return torch.zeros(1, dtype=dtype)
    return torch.tensor([float(i) for i in range(n)], dtype=dtype) / (n - 1) * 2 - 1


def offset_range(n: int, details: Details) -> float:
    """Largest offset per unit of range factor on an axis of ``n`` key cells."""
    if details.offset_range == 'n':
        return 1.0 / n
    return 1.0 if n == 1 else 1.0 / (n - 1)


def sampling_position(reference: torch.Tensor, raw_offset: torch.Tensor, n: int, factor: float,
                      details: Details) -> torch.Tensor:
    """Normalised key position on one axis from its reference coordinate and the offset
    network's raw output, by the sign of the offset range ``factor``."""
    if factor > 0:
        return reference + torch.tanh(raw_offset) * (factor * offset_range(n, details))
    if factor == 0:
        return reference + raw_offset if details.zero_factor == 'raw' else reference
    unbounded = reference + raw_offset
    if details.negative_factor == 'tanh':
        return torch.tanh(unbounded)
    return unbounded.clamp(-1.0, 1.0)


def offset_conv_padding(ksize: int, stride: int, details: Details) -> int:
    """Zero padding of the offset network's depth-wise conv."""
    if details.offset_padding == 'unless_ksize_is_stride' and ksize == stride:
        return 0
    return ksize // 2
