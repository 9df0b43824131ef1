"""A reference DAT / DAT++ written from the papers' equations and the releases' facts (test
oracle).

Every computation is spelled out (tap sums for convolutions, the four bilinear taps for
sampling, one image and one head at a time, no fused kernels), so that it shares no code path
with ``dat_det.models.layers.dat``; the parameter names and shapes are the official ones, so one
state dict (and one official-layout checkpoint) serves both. :class:`Details` holds each
formulation detail as a switch: ``DETAILS['v1']`` is the DAT v1 release (CVPR 2022),
``DETAILS['v2']`` the DAT++ release.
"""
from .attention import (
    DeformableAttentionReference,
    NeighborhoodAttentionReference,
    WindowAttentionReference,
)
from .details import DETAILS, Details
from .model import DATReference, MLPReference, StageReference, official_checkpoint

__all__ = ['DETAILS', 'DATReference', 'DeformableAttentionReference', 'Details',
           'MLPReference', 'NeighborhoodAttentionReference', 'StageReference',
           'WindowAttentionReference', 'official_checkpoint']
