"""DAT / DAT++ backbone for mmdet 3.x."""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

from ...utils.errors import UserInputError
from ..checkpoint import extract_state_dict, load_official_dat, select_prefix
from ..layers.dat import LayerNorm2d, TrunkStagesMixin, build_trunk, resolve_arch

# Sampling positions of one deformable block, for visualisation.
SamplingPositions = Dict[str, Any]
# Fields of a Pretrained init_cfg: mmengine's PretrainedInit's, and ``strict``.
PRETRAINED_FIELDS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict')


@MODELS.register_module()
class DAT(TrunkStagesMixin, BaseModule):
    """Vision Transformer with Deformable Attention (DAT, CVPR 2022) and DAT++.

    The module tree and parameter names follow the official models, so official ImageNet and
    DAT-Detection checkpoints load through ``init_cfg=dict(type='Pretrained',
    checkpoint=...)``, strictly (see :meth:`init_weights`).

    Args:
        arch: preset name (``dat-t/s/b``, ``dat++-t/s/b``) or a dict of architecture fields.
        pretrain_img_size: image side at pre-training; sizes the deformable ``rpe_table`` and
            ``fixed_pe`` tables (tables of other sizes are resized bicubically on loading).
        patch_size: stride of the stem.
        in_channels: image channels.
        expansion: MLP expansion ratio.
        drop_rate, attn_drop_rate: dropout rates.
        drop_path_rate: maximum stochastic depth rate (linear over all blocks).
        out_indices: stages whose (LayerNorm-ed) outputs are returned.
        frozen_stages: freeze the stem (0) and stages ``< frozen_stages`` (-1: nothing).
        norm_eval: keep BatchNorm layers in eval mode (DAT itself only has LayerNorms).
        with_cp: activation checkpointing of every block.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint='dat_pp_tiny_in1k_224.pth')``
            (add ``strict=False`` for a partial load).
        **arch_overrides: any architecture field overriding the preset (``dims``, ``depths``,
            ``stage_spec``, ``heads``, ``groups``, ``strides``, ``offset_range_factor``,
            ``formulation``, ...).

    ``formulation='v1'`` (the ``dat-t/s/b`` presets) computes what the DAT v1 release (CVPR
    2022) computes: deformable reference points, query grid and offset range normalised by
    the key/query grid size ``n`` instead of ``n - 1``, ``tanh`` instead of clamping for a
    negative ``offset_range_factor``, and the v1 conv stem and MLP with conv when those options
    are on. ``'v2'`` (``dat++-*``) is the DAT++ release.

    Inputs of any size work: the stem and 2x2 down-sampling pad to their stride, window
    attention pads to its window and neighbourhood attention to its kernel, as Swin does.
    """

    def __init__(self, arch: Union[str, Dict[str, Any]] = 'dat++-t',
                 pretrain_img_size: int = 224, patch_size: int = 4, in_channels: int = 3,
                 expansion: int = 4, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **arch_overrides) -> None:
        super().__init__(init_cfg=init_cfg)
        settings = resolve_arch(arch, **arch_overrides)
        self.arch_settings = settings
        if not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f'out_indices must lie in [0, 3], got {out_indices}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must lie in [-1, 4], got {frozen_stages}')
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        dims = settings['dims']
        self.num_features = list(dims)

        trunk = build_trunk(settings, pretrain_img_size, patch_size, in_channels, expansion,
                            drop_rate, attn_drop_rate, drop_path_rate, with_cp)
        self.set_trunk(trunk)
        self.norms = nn.ModuleList(LayerNorm2d(dims[i]) if i in self.out_indices else nn.Identity()
                                   for i in range(4))
        self._freeze_stages()

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: List[nn.Module] = [self.patch_proj]
        for i in range(self.frozen_stages):
            modules += [self.stages[i], self.norms[i]]
            if i > 0:
                modules.append(self.down_projs[i - 1])
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'DAT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        """Official checkpoints for ``Pretrained`` init_cfg; the default init otherwise.

        ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=None, map_location='cpu',
        strict=True)``: mmengine's ``Pretrained`` fields plus ``strict``. The load is strict:
        a checkpoint tensor this backbone does not use, or a weight it lacks, is an error
        naming them, except the detection output norms ``norms.i``, absent from ImageNet
        checkpoints (logged). ``strict=False`` loads what fits and warns about the rest.
        """
        cfg = self.init_cfg
        if isinstance(cfg, list) and any(c.get('type') == 'Pretrained' for c in cfg):
            raise UserInputError("DAT takes a Pretrained init_cfg as one dict, "
                                 "init_cfg=dict(type='Pretrained', checkpoint=...)")
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self._load_pretrained(cfg)
            self._is_init = True
            return
        super().init_weights()

    def _load_pretrained(self, cfg: Dict[str, Any]) -> None:
        unknown = sorted(set(cfg) - set(PRETRAINED_FIELDS))
        if unknown or 'checkpoint' not in cfg:
            raise UserInputError(f"Pretrained init_cfg of DAT takes {PRETRAINED_FIELDS[1:]} "
                                 f"(checkpoint required), got {unknown or 'no checkpoint'}")
        logger = MMLogger.get_current_instance()
        ckpt = CheckpointLoader.load_checkpoint(cfg['checkpoint'], logger=logger,
                                                map_location=cfg.get('map_location', 'cpu'))
        if cfg.get('prefix'):
            ckpt = select_prefix(extract_state_dict(ckpt), cfg['prefix'])
        report = load_official_dat(
            self, ckpt, strict=cfg.get('strict', True),
            hint="to load only what fits, set strict=False in the backbone's init_cfg")
        for line in report.log_lines():
            logger.info(line)
        if report.warning():
            logger.warning(report.warning())

    def _run(self, x: torch.Tensor, collect: bool
             ) -> Tuple[Tuple[torch.Tensor, ...], List[SamplingPositions]]:
        taken = sorted(set(self.out_indices))
        _, maps, stage_positions = self.run_stages(x, keep=taken)
        outs = tuple(self.norms[i](m).contiguous() for i, m in zip(taken, maps))
        positions = [dict(stage=i, block=d, pos=p[0], ref=p[1])
                     for i, block_positions in enumerate(stage_positions) if collect
                     for d, p in enumerate(block_positions) if p is not None]
        return outs, positions

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> one (B, C_i, ~H/2^(i+2), ~W/2^(i+2)) map per out index."""
        return self._run(x, collect=False)[0]

    def forward_with_positions(self, x: torch.Tensor
                               ) -> Tuple[Tuple[torch.Tensor, ...], List[SamplingPositions]]:
        """Features plus, per deformable block, ``dict(stage, block, pos, ref)`` where
        ``pos``/``ref`` are (B, groups, Hk, Wk, 2) normalised (y, x) positions in [-1, 1]
        (align_corners=True convention) of the deformed and reference key points."""
        return self._run(x, collect=True)
