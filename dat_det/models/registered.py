"""Imports every module that registers into mmdet's registries (needs mmdet)."""
from .backbones import DAT
from .detectors.deformable_detr import MSDADeformableDETR
from .detectors.dino import MSDADINO
from .msda_switch import DatDetMSDA, use_dat_det_msda, with_dat_det_msda
from .plugins import DAttentionPlugin, dattention_sites, insert_dattention, with_dattention

__all__ = ['DAT', 'MSDADeformableDETR', 'MSDADINO', 'DatDetMSDA', 'use_dat_det_msda',
           'with_dat_det_msda', 'DAttentionPlugin', 'dattention_sites', 'insert_dattention',
           'with_dattention']
