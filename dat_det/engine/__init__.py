"""Runner-side pieces: hooks, checkpoint writing and loading, optim wrappers, distributed
helpers (need mmengine). Importing this package registers them."""
from .checkpoint_io import AtomicCheckpointHook, AtomicLocalBackend
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed, teardown_distributed
from .hooks import DeformableVisualizationHook, NonFiniteLossError, NonFiniteLossHook
from .optim_wrappers import CPUAutocastOptimWrapper, amp_optim_wrapper
from .run_config import build_test_config, build_train_config
from .runner import build_runner, set_work_dir

__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'CPUAutocastOptimWrapper',
           'CPUDistributedDataParallel', 'DeformableVisualizationHook', 'NonFiniteLossError',
           'NonFiniteLossHook', 'amp_optim_wrapper', 'build_runner', 'build_test_config',
           'build_train_config', 'set_work_dir',
           'setup_cpu_distributed', 'teardown_distributed']
