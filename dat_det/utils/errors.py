"""One-line errors for mistakes in configs, command lines and data."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserInputError(ValueError):
    """A mistake in a config, a command line or a dataset, reported without a traceback."""


def _is_user_error(err: BaseException) -> bool:
    if isinstance(err, (UserInputError, FileNotFoundError, json.JSONDecodeError)):
        return True
    # mmengine reports unknown `type`s as KeyErrors that name the registry.
    return isinstance(err, KeyError) and 'registry' in str(err)


def one_line(err: BaseException) -> str:
    """``err`` as a single line: its type's name and message, whitespace collapsed."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return ' '.join(message.split())


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn user errors into ``error: ...`` on stderr and exit status 2.

    Set ``DAT_DET_DEBUG=1`` to get the full traceback instead. Other exceptions propagate.
    """
    try:
        yield
    except Exception as err:  # noqa: BLE001 - filtered right below
        if not _is_user_error(err) or os.environ.get('DAT_DET_DEBUG'):
            raise
        print(f'error: {one_line(err)}', file=sys.stderr, flush=True)
        sys.exit(2)


class RunStopped(RuntimeError):
    """A run that stopped itself on purpose (e.g. on a NaN loss); reported in one line."""

    exit_code = 3


@contextmanager
def exit_on_stopped_run() -> Iterator[None]:
    """Turn :class:`RunStopped` and :class:`UserInputError` raised while a run goes (e.g. an
    unreadable checkpoint found when resuming) into ``error: ...`` on stderr and a non-zero exit.

    ``DAT_DET_DEBUG=1`` gives the traceback instead.
    """
    try:
        yield
    except (RunStopped, UserInputError) as err:
        if os.environ.get('DAT_DET_DEBUG'):
            raise
        print(f'error: {one_line(err)}', file=sys.stderr, flush=True)
        sys.exit(getattr(err, 'exit_code', 2))
