"""Inductor options ``tools/train.py`` adds to a config's ``compile`` (mmengine's route to
``torch.compile`` of the model's ``train_step``).

On CPU, Inductor generates its own random numbers inside fused kernels for dropout, and that
generated code is slower than eager's ``bernoulli_`` (six FFN-dropout kernels of ~59 ms each in
a Deformable DETR R50 training step at 320x320, one thread). ``fallback_random=True`` makes the
compiled graphs call eager's random-number generator instead, which is faster there and draws
the same numbers as an eager run with the same seed. On CUDA Inductor's generator is fast, so
nothing is added.
"""
from __future__ import annotations

import copy
from typing import Any

CPU_TRAINING_OPTIONS = dict(fallback_random=True)


def with_cpu_training_options(compile_cfg: Any, cuda: bool) -> Any:
    """``compile_cfg`` (None, bool or a ``torch.compile`` kwargs dict) with
    :data:`CPU_TRAINING_OPTIONS` added to its Inductor ``options`` when training on CPU.

    Unchanged: no compilation (None / False), a CUDA machine, a backend other than Inductor,
    a ``mode`` (``torch.compile`` takes a mode or options, not both); options the config sets
    itself win over these defaults.
    """
    if compile_cfg is None or compile_cfg is False or cuda:
        return compile_cfg
    cfg = {} if compile_cfg is True else copy.deepcopy(dict(compile_cfg))
    if cfg.get('backend', 'inductor') != 'inductor' or cfg.get('mode') is not None:
        return compile_cfg
    cfg['options'] = {**CPU_TRAINING_OPTIONS, **dict(cfg.get('options') or {})}
    return cfg
