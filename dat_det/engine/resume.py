"""Which checkpoint ``--resume`` (without a path) continues from."""
from __future__ import annotations

import glob
import os.path as osp

from dat_det.utils.checkpoint_files import checkpoint_problem
from dat_det.utils.errors import UserInputError

from .train_guards import warn


def _candidates(work_dir: str, latest: str) -> list[str]:
    """Other checkpoints of the run, newest first."""
    folders = {work_dir, osp.dirname(latest) or work_dir}
    files = {p for f in folders for p in glob.glob(osp.join(f, '*.pth'))}
    files.discard(latest)
    return sorted(files, key=osp.getmtime, reverse=True)


def checkpoint_to_resume(work_dir: str) -> str | None:
    """The checkpoint ``--resume`` (no path) continues from: the one ``last_checkpoint`` names,
    or, if that is missing or unreadable, the newest readable checkpoint of the work dir (with
    a warning naming the bad one). None when the run has no checkpoint yet."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        latest = f.read().strip()
    problem = checkpoint_problem(latest) if latest else 'last_checkpoint is empty'
    if problem is None:
        return latest
    for candidate in _candidates(work_dir, latest):
        if checkpoint_problem(candidate) is None:
            warn(f'latest checkpoint {latest} is unreadable ({problem}); resuming from '
                 f'{candidate} instead')
            return candidate
    raise UserInputError(f'--resume: latest checkpoint {latest} is unreadable ({problem}) and '
                         f'{work_dir} holds no earlier readable checkpoint; run without '
                         '--resume to start over')
