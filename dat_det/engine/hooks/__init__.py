"""Training hooks."""
from .deformable_visualization_hook import DeformableVisualizationHook

__all__ = ['DeformableVisualizationHook']
