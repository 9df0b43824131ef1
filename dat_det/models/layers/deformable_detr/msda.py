"""Multi-scale deformable attention module of Deformable DETR."""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from dat_det.ops import SpatialShapes, multi_scale_deformable_attn

from ..probe import Probe


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al., ICLR 2021) on the ``dat_det.ops`` op.

    Named as in the Deformable DETR release (``MSDeformAttn``); mmcv's equivalent is
    ``mmcv.ops.MultiScaleDeformableAttention``, which :class:`dat_det.models.DatDetMSDA`
    subclasses for mmdet's own models.

    Every query samples ``num_points`` locations per head and level around its reference
    point and sums them with softmax weights. The module returns the attention output only;
    residual, dropout and normalization belong to the enclosing layer.

    Extension point: ``sampling_probe`` (a :class:`~dat_det.models.layers.probe.Probe`) is
    called on ``(sampling_locations (B, Lq, heads, levels, points, 2), attention_weights
    (B, Lq, heads, levels, points))`` right before the op, which receives what it returns;
    a forward hook on it records exactly what the op uses (see
    :func:`dat_det.visualization.record_msda`).

    Args:
        embed_dims: Channels of queries and values.
        num_heads: Attention heads; ``embed_dims`` must be divisible by it.
        num_levels: Feature levels sampled.
        num_points: Sampling points per head and level.
        value_proj_ratio: Width of the value projection relative to ``embed_dims``.
        backend: Backend of the op (``None`` lets the dispatcher choose).
        batch_first: Accepted for config compatibility; only ``True`` is supported.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 4,
                 num_points: int = 4,
                 value_proj_ratio: float = 1.0,
                 backend: Optional[str] = None,
                 batch_first: bool = True) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        if not batch_first:
            raise ValueError('only batch_first=True is supported')
        value_dims = int(embed_dims * value_proj_ratio)
        if value_dims % num_heads != 0:
            raise ValueError(f'value dims ({value_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, value_dims)
        self.output_proj = nn.Linear(value_dims, embed_dims)
        self.sampling_probe = Probe()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The "米" init: head ``h`` looks along θ_h = 2πh/heads, point ``k`` k+1 steps out.

        The direction (cos θ, sin θ) is scaled so that its larger component is 1, the k-th
        point of every level lies ``k + 1`` times that far out, and the result is the bias of
        ``sampling_offsets``; offset and attention weights start at zero so every query
        initially samples this fixed star pattern with uniform weights. Value and output
        projections get xavier-uniform weights and zero biases.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        self.sampling_offsets.bias.copy_(star_offsets(self.num_heads, self.num_levels,
                                                      self.num_points).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self,
                query: Tensor,
                value: Tensor,
                reference_points: Tensor,
                spatial_shapes: SpatialShapes,
                level_start_index: Optional[Tensor],
                value_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Attend from queries to the flattened multi-level values.

        Args:
            query: ``(B, Lq, C)``, positional embedding already added.
            value: ``(B, S, C)``, all levels flattened, ``S = sum(H_l * W_l)``.
            reference_points: ``(B, Lq, levels, 2)`` normalized (x, y) points, or
                ``(B, Lq, levels, 4)`` (cx, cy, w, h) boxes whose half size scales the offsets.
            spatial_shapes: ``(levels, 2)`` int64 (H, W) per level, or the same as Python
                int pairs (what ``torch.compile`` needs to trace without data-dependent reads).
            level_start_index: ``(levels,)`` start of each level in ``S`` (may be None with
                int pairs).
            value_padding_mask: ``(B, S)`` bool, True where padded; padded values are zeroed.

        Returns:
            ``(B, Lq, C)``.
        """
        batch, num_query, _ = query.shape
        num_value = value.shape[1]
        self._check_inputs(query, value, reference_points, spatial_shapes, value_padding_mask)

        value = self.value_proj(value)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, self.num_heads, -1)

        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(batch, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_query, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalize by that level's (W, H)
            if isinstance(spatial_shapes, Tensor):
                normalizer = spatial_shapes.flip(-1).to(offsets.dtype)
            else:
                normalizer = offsets.new_tensor([(w, h) for h, w in spatial_shapes])
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        else:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)

        locations, weights = self.sampling_probe(locations, weights)
        output = multi_scale_deformable_attn(value, spatial_shapes, level_start_index,
                                             locations, weights, backend=self.backend)
        return self.output_proj(output)

    def _check_inputs(self, query: Tensor, value: Tensor, reference_points: Tensor,
                      spatial_shapes: SpatialShapes,
                      value_padding_mask: Optional[Tensor]) -> None:
        """Metadata checks only (the op checks the level layout): nothing here reads tensor
        data, so tracing and ``torch.compile`` see no data-dependent branch."""
        num_levels = len(spatial_shapes)
        if query.dim() != 3 or value.dim() != 3 or query.shape[-1] != self.embed_dims:
            raise ValueError(f'query and value must be (B, L, {self.embed_dims}), got '
                             f'{tuple(query.shape)} and {tuple(value.shape)}')
        if reference_points.dim() != 4 or reference_points.shape[-1] not in (2, 4):
            raise ValueError('reference_points must be (B, Lq, levels, 2 or 4), got '
                             f'{tuple(reference_points.shape)}')
        shapes_ok = (tuple(spatial_shapes.shape) == (self.num_levels, 2)
                     if isinstance(spatial_shapes, Tensor) else num_levels == self.num_levels)
        if reference_points.shape[2] != self.num_levels or not shapes_ok:
            raise ValueError(f'expected {self.num_levels} levels, got reference_points '
                             f'{tuple(reference_points.shape)} and {num_levels} levels in '
                             'spatial_shapes')
        if value_padding_mask is not None and value_padding_mask.shape != value.shape[:2]:
            raise ValueError(f'value_padding_mask must be {tuple(value.shape[:2])}, got '
                             f'{tuple(value_padding_mask.shape)}')


def star_offsets(num_heads: int, num_levels: int, num_points: int) -> Tensor:
    """Initial sampling offsets of the "米" init, ``(heads, levels, points, 2)`` in pixels."""
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    directions = torch.stack([thetas.cos(), thetas.sin()], -1)
    directions = directions / directions.abs().max(-1, keepdim=True)[0]
    steps = torch.arange(1, num_points + 1, dtype=torch.float32)
    offsets = directions[:, None, None, :] * steps[None, None, :, None]
    return offsets.expand(num_heads, num_levels, num_points, 2).contiguous()
