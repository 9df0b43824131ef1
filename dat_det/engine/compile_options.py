"""Inductor options ``tools/train.py`` adds to a config's ``compile`` (mmengine's route to
``torch.compile`` of the model's ``train_step``), and those ``tools/analysis_tools/benchmark.py``
holds while compiled models run.

On CPU, Inductor generates its own random numbers inside fused kernels for dropout, and that
generated code is slower than eager's ``bernoulli_`` (six FFN-dropout kernels of ~59 ms each in
a Deformable DETR R50 training step at 320x320, one thread). ``fallback_random=True`` makes the
compiled graphs call eager's random-number generator instead, which is faster there and draws
the same numbers as an eager run with the same seed. On CUDA Inductor's generator is fast, so
nothing is added.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, ContextManager, Dict, Optional

CPU_TRAINING_OPTIONS = dict(fallback_random=True)
# Benchmarked inference graphs take their weights as constants (frozen), as deployment would.
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


def benchmark_inductor_options(compile: bool, device: str, backend: str = 'inductor',
                               mode: Optional[str] = None,
                               options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Inductor config values to hold while compiled models run: ``options`` if given, else
    :data:`BENCHMARK_OPTIONS` plus, on CPU, :data:`CPU_TRAINING_OPTIONS`; none without
    compilation, with a ``mode`` or with another backend. (Held as Inductor's config rather
    than passed as ``torch.compile(options=...)``, which leaves ``freezing`` off.)

    Raises:
        ValueError: both a ``mode`` and ``options`` (``torch.compile`` takes one or the other).
    """
    if mode is not None and options is not None:
        raise ValueError('a compile mode and compile options are exclusive (torch.compile '
                         'takes a mode or options)')
    if not compile or mode is not None or backend != 'inductor':
        return {}
    if options is not None:
        return dict(options)
    if str(device).split(':')[0] == 'cpu':
        return {**BENCHMARK_OPTIONS, **CPU_TRAINING_OPTIONS}
    return dict(BENCHMARK_OPTIONS)


def inductor_config(options: Dict[str, Any]) -> ContextManager:
    """A context holding Inductor's config at ``options`` (nothing when empty)."""
    if not options:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config_module
    return inductor_config_module.patch(options)
