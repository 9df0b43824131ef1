"""Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read mmengine checkpoints.

mmengine 0.10 calls ``torch.load`` without ``weights_only``; its checkpoints hold a
``HistoryBuffer`` (whose statistics methods pickle as ``getattr(HistoryBuffer, 'min')``) and numpy
scalars/arrays in the message hub, which the safe unpickler rejects, so resuming fails. We allow
exactly those globals instead of turning the check off. ``getattr`` only resolves attributes: the
safe unpickler still refuses to call anything that is not on its allow-list.
"""
from __future__ import annotations

import numpy as np
import torch


def _numpy_globals() -> list:
    multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                          np.int32, np.int8, np.uint8, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Register mmengine's checkpoint types as safe globals for ``torch.load``."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 has no weights_only default to satisfy
        return
    from mmengine.logging import HistoryBuffer
    add_safe_globals([HistoryBuffer, getattr, *_numpy_globals()])
