"""Registered detectors."""
from .deformable_detr import MSDADeformableDETR

__all__ = ['MSDADeformableDETR']
