"""Pictures of deformable attention (DAT keys, Deformable DETR sampling points)."""
from .capture import (
    DATPositions,
    DAttentionPositions,
    MSDASamples,
    dat_positions,
    dattention_positions,
    record_msda,
)
from .deformable import (
    DeformablePicture,
    dat_picture,
    dattention_pictures,
    ddetr_pictures,
    deformable_pictures,
    has_dat_backbone,
    has_dattention,
    has_msda,
)
from .draw import figure_to_rgb

__all__ = ['DATPositions', 'DAttentionPositions', 'MSDASamples', 'dat_positions',
           'dattention_positions', 'record_msda', 'DeformablePicture', 'dat_picture',
           'dattention_pictures', 'ddetr_pictures', 'deformable_pictures', 'has_dat_backbone',
           'has_dattention', 'has_msda', 'figure_to_rgb']
