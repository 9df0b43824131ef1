"""Architecture presets of DAT (CVPR 2022) and DAT++ as in the official configs."""
import copy
from typing import Any, Dict, Union

from .deformable_attention import check_formulation

_N_D_STAGES = [['N', 'D'], ['N', 'D'] * 2, ['N', 'D'] * 9, ['D', 'D']]


def _dat_v1(dims, depths3, heads, groups) -> Dict[str, Any]:
    return dict(
        dim_stem=dims[0], dims=dims, depths=[2, 2, depths3, 2],
        stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'] * (depths3 // 2), ['L', 'D']],
        heads=heads, window_sizes=[7, 7, 7, 7], groups=groups,
        use_pes=[False, False, True, True], dwc_pes=[False] * 4, fixed_pes=[False] * 4,
        log_cpb=[False] * 4, no_offs=[False] * 4, strides=[-1, -1, 1, 1],
        offset_range_factor=[-1, -1, 2, 2], ksizes=[9, 7, 5, 3], nat_ksizes=[3, 3, 3, 3],
        use_dwc_mlps=[False] * 4, use_lpus=[False] * 4, layer_scale_values=[-1] * 4,
        use_conv_patches=False, formulation='v1')


def _dat_pp(dims, heads, groups) -> Dict[str, Any]:
    return dict(
        dim_stem=dims[0], dims=dims, depths=[2, 4, 18, 2], stage_spec=_N_D_STAGES,
        heads=heads, window_sizes=[7, 7, 7, 7], groups=groups,
        use_pes=[True] * 4, dwc_pes=[False] * 4, fixed_pes=[False] * 4, log_cpb=[False] * 4,
        no_offs=[False] * 4, strides=[8, 4, 2, 1], offset_range_factor=[-1, -1, -1, -1],
        ksizes=[9, 7, 5, 3], nat_ksizes=[7, 7, 7, 7], use_dwc_mlps=[True] * 4,
        use_lpus=[True] * 4, layer_scale_values=[-1] * 4, use_conv_patches=True,
        formulation='v2')


DAT_ARCH_SETTINGS: Dict[str, Dict[str, Any]] = {
    'dat-t': _dat_v1([96, 192, 384, 768], 6, [3, 6, 12, 24], [-1, -1, 3, 6]),
    'dat-s': _dat_v1([96, 192, 384, 768], 18, [3, 6, 12, 24], [-1, -1, 3, 6]),
    'dat-b': _dat_v1([128, 256, 512, 1024], 18, [4, 8, 16, 32], [-1, -1, 4, 8]),
    'dat++-t': _dat_pp([64, 128, 256, 512], [2, 4, 8, 16], [1, 2, 4, 8]),
    'dat++-s': _dat_pp([96, 192, 384, 768], [3, 6, 12, 24], [1, 2, 3, 6]),
    'dat++-b': _dat_pp([128, 256, 512, 1024], [4, 8, 16, 32], [2, 4, 8, 16]),
}

# ImageNet-1k drop path rates of the official configs (detection configs set their own).
DAT_PRETRAIN_DROP_PATH = {'dat-t': 0.2, 'dat-s': 0.3, 'dat-b': 0.5,
                          'dat++-t': 0.2, 'dat++-s': 0.4, 'dat++-b': 0.7}

# Field names follow the official configs (``heads`` is the modules' ``num_heads``).
PER_STAGE_KEYS = ('dims', 'depths', 'stage_spec', 'heads', 'window_sizes', 'groups',
                  'use_pes', 'dwc_pes', 'fixed_pes', 'log_cpb', 'no_offs', 'strides',
                  'offset_range_factor', 'ksizes', 'nat_ksizes', 'use_dwc_mlps', 'use_lpus',
                  'layer_scale_values')
ARCH_KEYS = PER_STAGE_KEYS + ('dim_stem', 'use_conv_patches', 'formulation')


def resolve_arch(arch: Union[str, Dict[str, Any]], **overrides) -> Dict[str, Any]:
    """A full architecture dict from a preset name (or a dict) plus field overrides.

    ``formulation`` is 'v1' for ``dat-*`` (the DAT v1 release's grid normalisation, stem and
    MLP) and 'v2' for ``dat++-*`` and for dicts that do not set it.

    Raises:
        ValueError: unknown preset, field or formulation, or per-stage lists that are not of
            length 4.
    """
    if isinstance(arch, str):
        if arch.lower() not in DAT_ARCH_SETTINGS:
            raise ValueError(f'unknown DAT arch {arch!r}; presets: {list(DAT_ARCH_SETTINGS)}')
        settings = copy.deepcopy(DAT_ARCH_SETTINGS[arch.lower()])
    else:
        settings = copy.deepcopy(DAT_ARCH_SETTINGS['dat++-t'])
        settings.update(copy.deepcopy(dict(arch)))
    settings.update(copy.deepcopy(overrides))
    unknown = sorted(set(settings) - set(ARCH_KEYS))
    if unknown:
        raise ValueError(f'unknown DAT arch fields {unknown}; valid fields: {list(ARCH_KEYS)}')
    for key in PER_STAGE_KEYS:
        if len(settings[key]) != 4:
            raise ValueError(f'{key} must have one entry per stage (4), got {settings[key]}')
    check_formulation(settings['formulation'])
    return settings
