"""Test-only: SIGKILL a training process at a chosen point (imported through custom_imports).

``DAT_DET_TEST_KILL=<point>:<where>`` picks the point; the process prints ``KILLED AT ...`` to
stderr, then kills itself with SIGKILL (no cleanup, no ``finally``, as a node failure would):

- ``step:N``                  inside iteration N, between backward and the optimizer step
- ``train_iter:N``            before iteration N starts
- ``val:N:B``                 during validation after iteration N, after val batch B
- ``before_save:N``           after iteration N, checkpoint assembled, nothing written yet
- ``ckpt_mid:NAME``           half of checkpoint NAME's bytes written to its temporary file
- ``ckpt_before_rename:NAME`` NAME's temporary file complete, not yet renamed
- ``ckpt_after_rename:NAME``  NAME renamed into place, ``last_checkpoint`` not yet updated
- ``pointer_mid:NAME``        ``last_checkpoint`` (about to name NAME) half written
- ``prune:NAME``              the new checkpoint recorded, NAME (outdated) not yet removed
"""
from __future__ import annotations

import os
import os.path as osp
import signal
import sys

from mmengine.fileio import register_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from dat_det.engine.checkpoint_io import TEMP_SUFFIX, AtomicLocalBackend


def _kill_spec() -> tuple[str, list[str]]:
    point, _, where = os.environ.get('DAT_DET_TEST_KILL', '').partition(':')
    return point, where.split(':') if where else []


def maybe_kill(point: str, *where: object) -> None:
    want, want_where = _kill_spec()
    if want == point and [str(w) for w in where] == want_where:
        print(f'KILLED AT {point}:{":".join(map(str, where))}', file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _target_name(tmp: str) -> str:
    name = osp.basename(tmp)[1:-len(TEMP_SUFFIX)]  # '.epoch_2.pth.<pid>.incomplete'
    return name.rsplit('.', 1)[0]


class KillingBackend(AtomicLocalBackend):
    """``AtomicLocalBackend`` that can die at each step of a write."""

    def _write_temp(self, obj: bytes, tmp: str) -> None:
        name = _target_name(tmp)
        label = ('pointer_mid', osp.basename(obj.decode())) if name == 'last_checkpoint' else (
            'ckpt_mid', name)
        if _kill_spec() == (label[0], [label[1]]):
            with open(tmp, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            maybe_kill(*label)
        super()._write_temp(obj, tmp)
        if name != 'last_checkpoint':
            maybe_kill('ckpt_before_rename', name)

    def _commit(self, tmp: str, filepath: str) -> None:
        super()._commit(tmp, filepath)
        if osp.basename(filepath) != 'last_checkpoint':
            maybe_kill('ckpt_after_rename', osp.basename(filepath))

    def remove(self, filepath) -> None:
        maybe_kill('prune', osp.basename(str(filepath)))
        super().remove(filepath)


register_backend('killing_local', KillingBackend, force=True)


@HOOKS.register_module()
class KillPointHook(Hook):
    """Kills the process at the runner-side points of the module docstring."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        def pre_step(optimizer, args, kwargs):
            maybe_kill('step', runner.iter + 1)
        runner.optim_wrapper.optimizer.register_step_pre_hook(pre_step)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        maybe_kill('train_iter', runner.iter + 1)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        maybe_kill('val', runner.iter, batch_idx + 1)

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        maybe_kill('before_save', runner.iter)
