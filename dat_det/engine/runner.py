"""Building mmengine's Runner from a config, as the train and test tools do."""
from __future__ import annotations

import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint_io import use_checked_checkpoint_loader
from .distributed import setup_cpu_distributed


def set_work_dir(cfg: Config, work_dir: str | None, config_path: str) -> None:
    """``work_dir`` if given, else the config's, else ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type``) or mmengine's default one, also on CPU-only DDP;
    it reads local checkpoints through dat_det's checked loader
    (:func:`~dat_det.engine.checkpoint_io.use_checked_checkpoint_loader`)."""
    setup_cpu_distributed(cfg)
    use_checked_checkpoint_loader()
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
