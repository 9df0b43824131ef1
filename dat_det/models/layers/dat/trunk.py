"""The DAT trunk: stem, four stages and the down-samplings between them.

Shared by the mmdet backbone (``dat_det.models.backbones.DAT``) and the timm models
(``dat_det.timm``), so both build the same modules under the official names
(``patch_proj``, ``stages``, ``down_projs``) from one architecture dict, and run them with
the same :class:`TrunkStagesMixin`.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from .norm import LayerNorm2d
from .padding import PadToMultiple
from .stage import Positions, TransformerStage


class Trunk(NamedTuple):
    """The modules of a DAT trunk, to be set as attributes under these names.

    ``stem_pad`` / ``down_pads`` pad odd sizes to the stride of the non-overlapping
    (DAT) patch convolutions; they are identities for DAT++'s overlapping ones.
    """

    patch_proj: nn.Sequential
    stem_pad: nn.Module
    stages: nn.ModuleList
    down_projs: nn.ModuleList
    down_pads: nn.ModuleList


def build_trunk(settings: Dict[str, Any], pretrain_img_size: int = 224, patch_size: int = 4,
                in_channels: int = 3, expansion: int = 4, drop_rate: float = 0.0,
                attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                with_cp: bool = False) -> Trunk:
    """The trunk of a full architecture dict (see :func:`resolve_arch`).

    Stage ``i`` maps ``(B, C_{i-1}, H_i, W_i)`` to ``(B, dims[i], H_i, W_i)`` with
    ``H_i ~ H / 2^(i+2)``; ``pretrain_img_size`` sizes the deformable position tables.
    """
    dims, depths, dim_stem = settings['dims'], settings['depths'], settings['dim_stem']
    conv_patches = settings['use_conv_patches']
    formulation = settings['formulation']
    if conv_patches and formulation == 'v1':
        # The v1 release's conv stem: one 7x7 conv (output ceil(H / patch_size)).
        patch_proj = nn.Sequential(
            nn.Conv2d(in_channels, dim_stem, 7, patch_size, 3), LayerNorm2d(dim_stem))
        stem_pad: nn.Module = nn.Identity()
    elif conv_patches:
        patch_proj = nn.Sequential(
            nn.Conv2d(in_channels, dim_stem // 2, 3, patch_size // 2, 1),
            LayerNorm2d(dim_stem // 2), nn.GELU(),
            nn.Conv2d(dim_stem // 2, dim_stem, 3, patch_size // 2, 1),
            LayerNorm2d(dim_stem))
        stem_pad = nn.Identity()
    else:
        patch_proj = nn.Sequential(
            nn.Conv2d(in_channels, dim_stem, patch_size, patch_size, 0),
            LayerNorm2d(dim_stem))
        stem_pad = PadToMultiple(patch_size)

    fmap = pretrain_img_size // patch_size
    dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    stages = nn.ModuleList()
    for i in range(4):
        stages.append(TransformerStage(
            fmap_size=(fmap, fmap), dim_in=dim_stem if i == 0 else dims[i - 1] * 2,
            dim_embed=dims[i], depth=depths[i], stage_spec=settings['stage_spec'][i],
            num_heads=settings['heads'][i], window_size=settings['window_sizes'][i],
            groups=settings['groups'][i], stride=settings['strides'][i],
            offset_range_factor=settings['offset_range_factor'][i],
            use_pe=settings['use_pes'][i], dwc_pe=settings['dwc_pes'][i],
            no_off=settings['no_offs'][i], fixed_pe=settings['fixed_pes'][i],
            ksize=settings['ksizes'][i], log_cpb=settings['log_cpb'][i],
            nat_ksize=settings['nat_ksizes'][i], expansion=expansion, drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path_rates=dpr[sum(depths[:i]):sum(depths[:i + 1])],
            use_dwc_mlp=settings['use_dwc_mlps'][i],
            layer_scale_value=settings['layer_scale_values'][i],
            use_lpu=settings['use_lpus'][i], with_cp=with_cp, formulation=formulation))
        fmap //= 2

    down_projs, down_pads = nn.ModuleList(), nn.ModuleList()
    for i in range(3):
        if conv_patches:
            conv = nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1, bias=False)
            down_pads.append(nn.Identity())
        else:
            conv = nn.Conv2d(dims[i], dims[i + 1], 2, 2, 0, bias=False)
            down_pads.append(PadToMultiple(2))
        down_projs.append(nn.Sequential(conv, LayerNorm2d(dims[i + 1])))
    return Trunk(patch_proj, stem_pad, stages, down_projs, down_pads)


class TrunkStagesMixin:
    """Runs the :class:`Trunk` of the ``nn.Module`` it is mixed into (TorchScript compiles
    :meth:`run_stages`)."""

    def set_trunk(self, trunk: Trunk) -> None:
        """Registers the trunk's modules on this module under their official names."""
        self.patch_proj, self.stem_pad, self.stages = trunk.patch_proj, trunk.stem_pad, trunk.stages
        self.down_projs, self.down_pads = trunk.down_projs, trunk.down_pads

    def run_stages(self, x: torch.Tensor, last: int = -1, keep: Optional[List[int]] = None
                   ) -> Tuple[torch.Tensor, List[torch.Tensor], List[List[Positions]]]:
        """Stem and stages ``0..last`` (-1: all) on ``(B, 3, H, W)``.

        Returns:
            The map of stage ``last``; the maps ``(B, dims[i], H_i, W_i)`` of the stages ``i``
            in ``keep``, in stage order; per stage run, the sampling positions of its blocks.
        """
        n_stages = len(self.stages)
        last = n_stages - 1 if last < 0 else last
        taken: List[int] = [] if keep is None else keep
        maps: List[torch.Tensor] = []
        positions: List[List[Positions]] = []
        x = self.patch_proj(self.stem_pad(x))
        # stage i and the down-sampling after it; the zip stops before the last stage (loops
        # over module lists are unrolled by TorchScript, which allows no break in them)
        for i, (stage, pad, proj) in enumerate(zip(self.stages, self.down_pads, self.down_projs)):
            if i <= last:
                x, stage_positions = stage(x)
                positions.append(stage_positions)
                if i in taken:
                    maps.append(x)
                if i < last:
                    x = proj(pad(x))
        if last == n_stages - 1:
            x, stage_positions = self.stages[-1](x)
            positions.append(stage_positions)
            if last in taken:
                maps.append(x)
        return x, maps, positions
