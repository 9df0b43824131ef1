"""Checkpoints that are never seen half-written, and one-line errors for unreadable ones.

- ``AtomicLocalBackend`` (mmengine file backend ``'atomic_local'``): ``put`` writes a hidden
  temporary file next to the target, flushes it to disk and renames it over the target, so a
  reader (or a resumed run) sees either the old file or the complete new one.
- ``AtomicCheckpointHook``: mmengine's ``CheckpointHook`` writing through that backend, and in
  an order that never leaves the run without a complete checkpoint: the new checkpoint is
  renamed into place, then ``last_checkpoint`` is replaced (atomically too), and only then are
  checkpoints beyond ``max_keep_ckpts`` removed (mmengine removes them before saving).
- :func:`use_checked_checkpoint_loader` (called by :func:`dat_det.engine.build_runner`)
  replaces the local checkpoint loader of mmengine's ``CheckpointLoader`` (prefix ``''``) by
  :func:`dat_det.utils.checkpoint_files.load_checkpoint_file`, which checks the file first and
  allows mmengine's own types to the safe unpickler for that load only, so every path of the
  runner that loads a local checkpoint (``--resume``, ``load_from``, ``init_cfg=Pretrained``,
  test.py) reports a truncated or corrupt file in one line naming it. Importing this module
  changes nothing.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
from pathlib import Path
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from dat_det.utils.checkpoint_files import load_checkpoint_file

TEMP_SUFFIX = '.incomplete'


def temp_path(filepath: str) -> str:
    """The hidden temporary file a write of ``filepath`` goes through."""
    folder, name = osp.split(filepath)
    return osp.join(folder, f'.{name}.{os.getpid()}{TEMP_SUFFIX}')


class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary name, fsynced, then renamed over the target."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
        tmp = temp_path(filepath)
        try:
            self._write_temp(obj, tmp)
            self._commit(tmp, filepath)
        finally:
            if osp.exists(tmp):
                os.remove(tmp)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

    def _write_temp(self, obj: bytes, tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(obj)
            f.flush()
            os.fsync(f.fileno())

    def _commit(self, tmp: str, filepath: str) -> None:
        os.replace(tmp, filepath)
        dir_fd = os.open(osp.dirname(osp.abspath(filepath)), os.O_RDONLY)
        try:  # make the rename itself durable
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


register_backend('atomic_local', AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose files appear complete or not at all (see the module docstring).

    Takes every argument of ``CheckpointHook``; without ``backend_args`` it writes local files
    through ``AtomicLocalBackend``. Leftover temporary files of a killed run are removed when
    training starts.
    """

    def __init__(self, *args, backend_args: dict | None = None, **kwargs) -> None:
        if backend_args is None and kwargs.get('file_client_args') is None:
            out_dir = kwargs.get('out_dir')
            if out_dir is None or '://' not in str(out_dir):
                backend_args = dict(backend='atomic_local')
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():
            for folder in {str(self.out_dir), runner.work_dir}:
                for leftover in glob.glob(osp.join(folder, f'.*{TEMP_SUFFIX}')):
                    runner.logger.warning(f'removing an incomplete write of a killed run: '
                                          f'{leftover}')
                    os.remove(leftover)

    def _atomic_backend(self) -> AtomicLocalBackend:
        backend = self.file_backend
        return backend if isinstance(backend, AtomicLocalBackend) else AtomicLocalBackend()

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            kept = list(self.keep_ckpt_ids) + [step]
            outdated, kept = kept[:-self.max_keep_ckpts], kept[-self.max_keep_ckpts:]
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(kept)
            runner.message_hub.update_info('keep_ckpt_ids', kept)

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        self._atomic_backend().put_text(str(self.last_ckpt),
                                        osp.join(runner.work_dir, 'last_checkpoint'))
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are folders
                self.file_backend.rmtree(path)


def load_from_local(filename: str, map_location=None):
    """mmengine's local checkpoint loader, with the file checked and errors in one line."""
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def use_checked_checkpoint_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` read local files with :func:`load_from_local`.

    mmengine keeps its loaders in one table for the whole process, so this holds for every
    later load in the process (calling it again changes nothing); only code that builds a
    runner (:func:`dat_det.engine.build_runner`) calls it.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
