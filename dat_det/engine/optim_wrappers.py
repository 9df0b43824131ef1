"""bf16 autocast training on CPU (mmengine's ``AmpOptimWrapper`` asserts a GPU)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under ``torch.autocast('cpu', dtype=bfloat16)``.

    bf16 has fp32's exponent range, so no loss scaling is needed: backward and the optimizer
    step are the plain ``OptimWrapper`` ones, on fp32 parameters and gradients. Ops that
    autocast keeps in fp32 (losses, norms, softmax) stay fp32; the deformable attention op
    accumulates in fp32 whatever its input dtype.
    """

    def __init__(self, dtype: str | torch.dtype = 'bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype != torch.bfloat16:
            raise ValueError(f'CPU autocast supports bfloat16 only, got {dtype}')
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper(optim_wrapper: dict, cuda: bool) -> dict:
    """The ``optim_wrapper`` config for ``--amp``: fp16 + dynamic loss scaling on a GPU
    (mmengine's ``AmpOptimWrapper``), bf16 autocast on a CPU-only machine."""
    wrapper = dict(optim_wrapper)
    if wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                                   'CPUAutocastOptimWrapper'):
        return wrapper  # a custom wrapper decides its own precision
    if cuda:
        wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')
        wrapper.pop('dtype', None)
    else:
        wrapper.update(type='CPUAutocastOptimWrapper', dtype='bfloat16')
        wrapper.pop('loss_scale', None)
    return wrapper
