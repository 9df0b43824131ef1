"""Inductor options: those ``tools/train.py`` adds to a config's ``compile`` (mmengine's route
to ``torch.compile`` of the model's ``train_step``), and those
``tools/analysis_tools/benchmark.py --compile`` holds while it times a model.

On CPU, Inductor generates its own random numbers inside fused kernels for dropout, and that
generated code is slower than eager's ``bernoulli_`` (six FFN-dropout kernels of ~59 ms each in
a Deformable DETR R50 training step at 320x320, one thread). ``fallback_random=True`` makes the
compiled graphs call eager's random-number generator instead, which is faster there and draws
the same numbers as an eager run with the same seed. On CUDA Inductor's generator is fast, so
nothing is added.

The benchmark also freezes the graphs compiled without autograd (inference): the weights
become constants, batch norms fold into convolutions and weights are pre-packed for oneDNN.
These options are set as Inductor's config while the models run (:func:`inductor_config`),
because ``torch.compile(options=...)`` leaves ``freezing`` off.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, ContextManager

import torch

from dat_det.utils.errors import UserInputError

CPU_TRAINING_OPTIONS = dict(fallback_random=True)
#: Inductor options of the benchmark's ``--compile`` on every device
BENCHMARK_OPTIONS = dict(freezing=True)


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


def benchmark_inductor_options(device: str, options: dict | None = None,
                               mode: str | None = None, backend: str = 'inductor') -> dict:
    """Inductor config values the benchmark holds while compiled models run.

    ``options`` (``--compile-options``) when given, else :data:`BENCHMARK_OPTIONS` plus, on
    CPU, :data:`CPU_TRAINING_OPTIONS`; none with a ``mode`` or a backend other than Inductor.

    Raises:
        UserInputError: both a ``mode`` and ``options`` (``torch.compile`` takes one).
    """
    if mode is not None and options is not None:
        raise UserInputError('--compile-mode and --compile-options are exclusive (torch.compile '
                             'takes a mode or options)')
    if mode is not None or backend != 'inductor':
        return {}
    if options is not None:
        return dict(options)
    if torch.device(device).type == 'cpu':
        return {**BENCHMARK_OPTIONS, **CPU_TRAINING_OPTIONS}
    return dict(BENCHMARK_OPTIONS)


def inductor_config(options: dict) -> ContextManager:
    """A context holding Inductor's config at ``options`` and restoring it afterwards
    (nothing when ``options`` is empty)."""
    if not options:
        return contextlib.nullcontext()
    import torch._inductor.config as config  # only needed when compiling with Inductor
    return config.patch(options)
