"""Training hooks."""
from .deformable_visualization_hook import DeformableVisualizationHook
from .nonfinite_loss_hook import NonFiniteLossError, NonFiniteLossHook

__all__ = ['DeformableVisualizationHook', 'NonFiniteLossError', 'NonFiniteLossHook']
