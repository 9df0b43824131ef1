"""Runner-side pieces: hooks and distributed helpers (need mmengine)."""
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed

__all__ = ['CPUDistributedDataParallel', 'setup_cpu_distributed']
