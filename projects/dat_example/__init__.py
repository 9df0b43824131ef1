"""Example project: a DAT++ backbone and a DAT-attention FPN under mmdet's ATSS head."""
from .deformable_top_fpn import DeformableTopFPN

__all__ = ['DeformableTopFPN']
