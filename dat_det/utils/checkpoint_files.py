"""Reading checkpoints safely: ``torch.load(weights_only=True)`` for mmengine checkpoints, and a
one-line verdict on files that are truncated or corrupt.

mmengine 0.10 calls ``torch.load`` without ``weights_only``; its checkpoints hold a
``HistoryBuffer`` (whose statistics methods pickle as ``getattr(HistoryBuffer, 'min')``) and numpy
scalars/arrays in the message hub, which the safe unpickler (torch >= 2.6's default) rejects, so
resuming fails. We allow exactly those globals, and only while a checkpoint is being read
(:func:`mmengine_checkpoint_globals`), instead of turning the check off. ``getattr`` only
resolves attributes: the safe unpickler still refuses to call anything not on its allow-list.
"""
from __future__ import annotations

import contextlib
import os.path as osp
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .errors import UserInputError


class CheckpointError(UserInputError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint)."""


def _numpy_globals() -> list:
    multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                          np.int32, np.int8, np.uint8, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def _mmengine_globals() -> list:
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, getattr, *_numpy_globals()]


@contextlib.contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Within this block, ``torch.load(weights_only=True)`` accepts mmengine's checkpoint types."""
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is None:  # torch < 2.5: no weights_only default to satisfy
        yield
        return
    with safe_globals(_mmengine_globals()):
        yield


def _zip_problem(path: str) -> str | None:
    """Why a torch zip checkpoint is unreadable (CRC of every record checked), None if fine."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
                return 'a zip archive without data.pkl, not a PyTorch checkpoint'
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f'corrupt zip archive ({err})'
    return None if bad is None else f'record {bad} fails its CRC check (corrupt data)'


def checkpoint_problem(path: str) -> str | None:
    """Why ``path`` cannot be a readable checkpoint, or None if it reads.

    Current (zip) checkpoints are checked record by record without unpickling, so a large file
    costs one read; legacy (pre-zip) files are loaded once to see if they unpickle.
    """
    if not osp.isfile(path):
        return 'file not found'
    if osp.getsize(path) == 0:
        return 'empty file'
    if zipfile.is_zipfile(path):
        return _zip_problem(path)
    with open(path, 'rb') as f:
        head = f.read(4)
    if head[:2] == b'PK':  # starts like a zip but its central directory is gone: truncated
        return 'truncated zip archive (no central directory)'
    try:
        with mmengine_checkpoint_globals():
            torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the verdict
        message = ' '.join(str(err).split())
        if 'Weights only load failed' in message:
            return ('holds objects that torch.load(weights_only=True) refuses; convert it with '
                    'tools/model_converters/')
        return (f'not a PyTorch checkpoint, neither a zip archive nor a legacy pickle '
                f'({type(err).__name__}: {message[:150]})')
    return None


def check_checkpoint(path: str, what: str = 'checkpoint') -> None:
    """Raise :class:`CheckpointError` naming ``path`` if it is not a readable checkpoint."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f'{what} {path} is unreadable: {problem}')


def load_checkpoint_file(path: str, map_location: Any = None) -> Any:
    """What the local checkpoint file ``path`` holds: ``torch.load(weights_only=True)`` with
    mmengine's types allowed for this load only.

    The one reader of local checkpoints: mmengine's runner reads them through it (see
    :func:`dat_det.engine.checkpoint_io.use_checked_checkpoint_loader`), and so do
    :mod:`dat_det.apis`.

    Raises:
        CheckpointError: ``checkpoint not found: PATH``, or ``checkpoint PATH is unreadable:
            why`` (truncated, corrupt, not a checkpoint).
    """
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    check_checkpoint(path)
    try:
        with mmengine_checkpoint_globals():
            return torch.load(path, map_location=map_location)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f'checkpoint {path} is unreadable: '
                              f'{" ".join(str(err).split())[:200]}') from err
