"""Runner-side pieces: hooks and distributed helpers (need mmengine)."""
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed, teardown_distributed
from .hooks import DeformableVisualizationHook
from .runner import build_runner, set_work_dir

__all__ = ['CPUDistributedDataParallel', 'DeformableVisualizationHook', 'build_runner',
           'set_work_dir', 'setup_cpu_distributed', 'teardown_distributed']
