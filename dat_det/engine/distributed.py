"""Multi-process training on CPU (gloo) with mmengine's Runner.

mmengine 0.10 always calls ``torch.cuda.set_device`` when it starts the process group and wraps
the model with ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA. For CPU runs
(tests, debugging) we start the gloo group ourselves and wrap with ``device_ids=None``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for modules on CPU: ignores ``device_ids``."""

    def __init__(self, module: torch.nn.Module, device_ids=None, **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)


def setup_cpu_distributed(cfg) -> None:
    """For ``--launcher pytorch`` without CUDA: start a gloo group and pick the CPU wrapper."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def teardown_distributed(barrier: bool = True) -> None:
    """Destroy the default process group, if any, before the interpreter exits.

    Left alive, gloo's worker threads can be torn down mid-flight at exit, which aborts the
    process ("terminate called without an active exception") after a successful run. Call it
    from a ``finally``; pass ``barrier=False`` when leaving on an error, since the other ranks
    may never reach the barrier.
    """
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
