"""Configs as ``tools/train.py`` and ``tools/test.py`` run them: the config file with the
command line's changes and dat_det's guards applied, checked before any runner is built.

The tools are thin over these functions, and tests and other scripts call them the same way.
"""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.config import Config

from dat_det.utils.checkpoint_files import check_checkpoint
from dat_det.utils.config import load_config
from dat_det.utils.data_check import check_dataloader_datasets
from dat_det.utils.errors import UserInputError

from .compile_options import with_cpu_training_options
from .optim_wrappers import amp_optim_wrapper
from .resume import checkpoint_to_resume
from .runner import set_work_dir
from .train_guards import (
    check_pretrained_files,
    guard_nonfinite_loss,
    skip_unreadable_train_images,
    use_atomic_checkpoints,
)

AMP_WRAPPER_TYPES = ('OptimWrapper', 'AmpOptimWrapper', 'CPUAutocastOptimWrapper')


def build_train_config(config: str, work_dir: str | None = None,
                       cfg_options: dict | None = None, launcher: str = 'none',
                       amp: bool = False, auto_scale_lr: bool = False,
                       resume: str | None = None,
                       cuda: bool | None = None) -> tuple[Config, list[str]]:
    """The training config of ``config`` and the notes to log about its data.

    Args:
        config: config file.
        work_dir: ``--work-dir`` (else the config's, else ``work_dirs/<config name>``).
        cfg_options: ``--cfg-options``; every key must exist in the config.
        launcher: ``none``, ``pytorch`` or ``slurm``.
        amp: mixed precision (fp16 with loss scaling on CUDA, bf16 autocast on CPU).
        auto_scale_lr: scale the learning rate by the actual total batch size.
        resume: ``'auto'`` (the latest readable checkpoint of the work dir), a checkpoint
            file, or None.
        cuda: whether training runs on CUDA (default: whether a CUDA device is available).

    Returns:
        The config, with atomic checkpoints, the non-finite loss guard, skipping of unreadable
        training images and, on CPU, the CPU Inductor options of ``compile``; and one note per
        dataset on what training will ignore.

    Raises:
        UserInputError: a missing or unreadable config, checkpoint, pretrained file or
            dataset, an option the config cannot take.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    set_work_dir(cfg, work_dir, config)
    if amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') not in AMP_WRAPPER_TYPES:
            raise UserInputError(f'--amp cannot change optim_wrapper type '
                                 f'{cfg.optim_wrapper.type}; set its precision in the config')
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper, cuda)
    if auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserInputError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                                 'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    check_pretrained_files(cfg)
    set_resume(cfg, resume)
    notes = check_dataloader_datasets(cfg, ('train', 'val'))
    use_atomic_checkpoints(cfg)
    guard_nonfinite_loss(cfg)
    skip_unreadable_train_images(cfg)
    if cfg.get('compile') is not None:
        cfg.compile = with_cpu_training_options(cfg.compile, cuda)
    return cfg, notes


def set_resume(cfg: Config, resume: str | None) -> None:
    """Set ``cfg.resume`` / ``cfg.load_from`` for ``resume`` (see :func:`build_train_config`),
    refusing a missing or unreadable checkpoint (also a local ``load_from``) in one line."""
    if resume == 'auto':
        # None (no checkpoint yet): mmengine's auto-resume finds none and starts from scratch.
        cfg.resume, cfg.load_from = True, checkpoint_to_resume(cfg.work_dir)
    elif resume is not None:
        if not osp.isfile(resume):
            raise UserInputError(f'--resume checkpoint not found: {resume}')
        check_checkpoint(resume, '--resume checkpoint')
        cfg.resume, cfg.load_from = True, resume
    elif cfg.get('load_from') and '://' not in cfg.load_from:
        if not osp.isfile(cfg.load_from):
            raise UserInputError(f'load_from checkpoint not found: {cfg.load_from}')
        check_checkpoint(cfg.load_from, 'load_from checkpoint')


def build_test_config(config: str, checkpoint: str, work_dir: str | None = None,
                      cfg_options: dict | None = None, launcher: str = 'none',
                      show_dir: str | None = None, score_thr: float = 0.3) -> Config:
    """The evaluation config of ``config`` for ``checkpoint``.

    ``show_dir``: draw predictions (score above ``score_thr``) next to the ground truth into
    this folder, relative to the run's timestamp folder.

    Raises:
        UserInputError: a missing or unreadable config, checkpoint or dataset, or
            ``show_dir`` without a visualization hook in the config.
    """
    if not osp.isfile(checkpoint):
        raise UserInputError(f'checkpoint not found: {checkpoint}')
    check_checkpoint(checkpoint)
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    set_work_dir(cfg, work_dir, config)
    cfg.load_from = checkpoint
    if show_dir:
        hook = cfg.get('default_hooks', {}).get('visualization')
        if hook is None:
            raise UserInputError('--show-dir needs a `visualization` entry in default_hooks')
        hook.update(draw=True, test_out_dir=show_dir, score_thr=score_thr)
    check_dataloader_datasets(cfg, ('test', ))
    return cfg
