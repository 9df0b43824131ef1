"""One DAT stage: a stack of (LPU) -> attention -> MLP blocks with pre-norm residuals."""
import math
from typing import Final, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .deformable_attention import DeformableAttention
from .mlp import TransformerMLP, TransformerMLPWithConv, TransformerMLPWithConvV1
from .neighborhood_attention import NeighborhoodAttention2D
from .norm import LayerNorm2d
from .residual import DropPath, LayerScale, LocalPerceptionUnit
from .window_attention import LocalAttention, ShiftWindowAttention

BLOCK_TYPES = {
    'L': 'local window attention',
    'S': 'shifted window attention',
    'N': 'neighbourhood attention',
    'D': 'deformable attention',
}

# (pos, ref) of a deformable block, each (B, g, Hk, Wk, 2); None for other blocks.
Positions = Optional[Tuple[torch.Tensor, torch.Tensor]]


# TorchScript indexes a ModuleList with a computed index only through a module interface.
@torch.jit.interface
class MapModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pass


class TransformerStage(nn.Module):
    """A DAT stage; module names follow the official ``TransformerStage``.

    Args:
        fmap_size: (H, W) of this stage at pre-training (sizes deformable ``rpe_table``).
        dim_in: input channels (a 1x1 ``proj`` maps them to ``dim_embed`` when different).
        dim_embed: channels of the stage.
        depth: number of blocks.
        stage_spec: one letter per block, see ``BLOCK_TYPES``.
        num_heads: attention heads.
        window_size: window of L/S blocks.
        groups, stride, offset_range_factor, use_pe, dwc_pe, no_off, fixed_pe, ksize,
            log_cpb: options of the D blocks (see :class:`DeformableAttention`).
        nat_ksize: kernel of N blocks.
        expansion: MLP expansion ratio.
        drop: dropout inside MLPs and after attention projections.
        attn_drop: dropout of attention weights.
        drop_path_rates: stochastic depth rate of each block.
        use_dwc_mlp: use the MLP with a depth-wise conv (DAT++).
        layer_scale_value: init of layer scales; <= 0 disables them.
        use_lpu: local perception unit before each block (DAT++).
        with_cp: activation checkpointing of every block while training.
        formulation: 'v2' (DAT++ release) or 'v1' (DAT v1 release): the grids of the D blocks
            (see :class:`DeformableAttention`) and, with ``use_dwc_mlp``, the v1 MLP
            (:class:`TransformerMLPWithConvV1`).
    """

    use_layer_scale: Final[bool]

    def __init__(self, fmap_size: Tuple[int, int], dim_in: int, dim_embed: int, depth: int,
                 stage_spec: Sequence[str], num_heads: int, window_size: int = 7, groups: int = 1,
                 stride: int = 1, offset_range_factor: float = -1, use_pe: bool = True,
                 dwc_pe: bool = False, no_off: bool = False, fixed_pe: bool = False,
                 ksize: int = 3, log_cpb: bool = False, nat_ksize: int = 7,
                 expansion: int = 4, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path_rates: Sequence[float] = (), use_dwc_mlp: bool = False,
                 layer_scale_value: float = -1, use_lpu: bool = False,
                 with_cp: bool = False, formulation: str = 'v2') -> None:
        super().__init__()
        if len(stage_spec) != depth:
            raise ValueError(f'stage_spec {list(stage_spec)} does not have depth {depth} blocks')
        unknown = [s for s in stage_spec if s not in BLOCK_TYPES]
        if unknown:
            raise ValueError(f'unsupported block types {unknown}; choose from {BLOCK_TYPES}')
        if dim_embed % num_heads != 0:
            raise ValueError(f'dim {dim_embed} is not divisible by num_heads {num_heads}')
        drop_path_rates = list(drop_path_rates) or [0.0] * depth
        self.depth = depth
        self.stage_spec = list(stage_spec)
        self.use_lpu = use_lpu
        self.use_layer_scale = layer_scale_value > 0
        self.with_cp = with_cp
        self.proj = nn.Conv2d(dim_in, dim_embed, 1, 1, 0) if dim_in != dim_embed \
            else nn.Identity()
        self.layer_norms = nn.ModuleList(LayerNorm2d(dim_embed) for _ in range(2 * depth))
        if use_dwc_mlp:
            mlp = TransformerMLPWithConvV1 if formulation == 'v1' else TransformerMLPWithConv
        else:
            mlp = TransformerMLP
        self.mlps = nn.ModuleList(mlp(dim_embed, expansion, drop) for _ in range(depth))
        self.layer_scales = nn.ModuleList(
            LayerScale(dim_embed, layer_scale_value) if layer_scale_value > 0 else nn.Identity()
            for _ in range(2 * depth))
        self.local_perception_units = nn.ModuleList(
            LocalPerceptionUnit(dim_embed) if use_lpu else nn.Identity() for _ in range(depth))
        self.attns = nn.ModuleList()
        for spec in self.stage_spec:
            if spec == 'L':
                attn = LocalAttention(dim_embed, num_heads, window_size, attn_drop, drop)
            elif spec == 'S':
                attn = ShiftWindowAttention(dim_embed, num_heads, window_size, attn_drop, drop,
                                            math.ceil(window_size / 2))
            elif spec == 'N':
                # the releases' N blocks always learn natten's relative-position bias ``rpb``
                attn = NeighborhoodAttention2D(dim_embed, nat_ksize, num_heads, attn_drop, drop,
                                               rel_pos_bias=True)
            else:
                attn = DeformableAttention(
                    dim_embed, num_heads, groups, fmap_size, stride=stride,
                    offset_range_factor=offset_range_factor, use_pe=use_pe, dwc_pe=dwc_pe,
                    fixed_pe=fixed_pe, log_cpb=log_cpb, no_off=no_off, ksize=ksize,
                    attn_drop=attn_drop, proj_drop=drop, formulation=formulation)
            self.attns.append(attn)
        self.drop_path = nn.ModuleList(
            DropPath(r) if r > 0 else nn.Identity() for r in drop_path_rates)

    def block(self, d: int, x: torch.Tensor):
        """Block ``d``: (B, C, H, W) -> ((B, C, H, W), pos, ref) (pos/ref None unless D)."""
        x = self.local_perception_units[d](x)
        y, pos, ref = self.attns[d](self.layer_norms[2 * d](x))
        x = x + self.drop_path[d](self.layer_scales[2 * d](y))
        y = self.mlps[d](self.layer_norms[2 * d + 1](x))
        x = x + self.drop_path[d](self.layer_scales[2 * d + 1](y))
        return x, pos, ref

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Positions]]:
        """(B, C_in, H, W) -> ((B, C, H, W), per-block sampling positions)."""
        x = self.proj(x)
        if torch.jit.is_scripting():
            return self._compiled_blocks(x)
        positions: List[Positions] = []
        for d in range(self.depth):
            if self.with_cp and self.training and x.requires_grad:
                x, pos, ref = cp.checkpoint(self.block, d, x, use_reentrant=False)
            else:
                x, pos, ref = self.block(d, x)
            positions.append(None if pos is None else (pos, ref))
        return x, positions

    def _compiled_blocks(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Positions]]:
        """The blocks as :meth:`block` runs them, in the form TorchScript compiles: block-wise
        lists zipped, and the two norms and layer scales of block ``d`` taken through
        ``MapModule`` (TorchScript indexes a ModuleList with a computed index only so, and the
        interface's ``forward`` would skip hooks in eager mode)."""
        positions: List[Positions] = []
        for d, (lpu, attn, mlp, drop_path) in enumerate(zip(
                self.local_perception_units, self.attns, self.mlps, self.drop_path)):
            x = lpu(x)
            attn_norm: MapModule = self.layer_norms[2 * d]
            y, pos, ref = attn(attn_norm.forward(x))
            if self.use_layer_scale:
                attn_scale: MapModule = self.layer_scales[2 * d]
                y = attn_scale.forward(y)
            x = x + drop_path(y)
            mlp_norm: MapModule = self.layer_norms[2 * d + 1]
            y = mlp(mlp_norm.forward(x))
            if self.use_layer_scale:
                mlp_scale: MapModule = self.layer_scales[2 * d + 1]
                y = mlp_scale.forward(y)
            x = x + drop_path(y)
            positions.append(None if pos is None or ref is None else (pos, ref))
        return x, positions
