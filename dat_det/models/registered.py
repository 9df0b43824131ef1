"""Imports every module that registers into mmdet's registries (needs mmdet)."""
from .backbones import DAT
from .detectors.deformable_detr import MSDADeformableDETR
from .detectors.dino import MSDADINO

__all__ = ['DAT', 'MSDADeformableDETR', 'MSDADINO']
