"""Registered detectors."""
from .deformable_detr import MSDADeformableDETR
from .dino import MSDADINO

__all__ = ['MSDADeformableDETR', 'MSDADINO']
