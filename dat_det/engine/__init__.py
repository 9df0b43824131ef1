"""Runner-side pieces: hooks and distributed helpers (need mmengine)."""
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed
from .hooks import DeformableVisualizationHook

__all__ = ['CPUDistributedDataParallel', 'DeformableVisualizationHook', 'setup_cpu_distributed']
