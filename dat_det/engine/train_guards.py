"""What ``tools/train.py`` does to a config so that a long run does not lose its work.

Each function edits a loaded config in place (or checks it) before the runner is built:

- :func:`use_atomic_checkpoints`: ``CheckpointHook`` -> ``AtomicCheckpointHook``.
- :func:`guard_nonfinite_loss`: a ``NonFiniteLossHook`` unless the config has one.
- :func:`skip_unreadable_train_images`: the train pipeline's ``LoadImageFromFile`` ->
  ``LoadImageOrSkip``.
- :func:`check_pretrained_files`: every local ``init_cfg=Pretrained`` file exists and reads.
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import Any, Iterator

from dat_det.utils.checkpoint_files import check_checkpoint
from dat_det.utils.config import dataset_configs
from dat_det.utils.errors import UserInputError

OFFICIAL_DAT_WEIGHTS = 'https://github.com/LeapLabTHU/DAT'
_REMOTE_PREFIXES = ('http://', 'https://', 'torchvision://', 'open-mmlab://', 'openmmlab://',
                    'mmcls://', 'mmpretrain://', 'modelzoo://', 'pavi://', 's3://', 'petrel://')


def warn(message: str) -> None:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def _add_import(cfg: Any, module: str) -> None:
    """Name ``module`` in ``custom_imports``, so the config the runner dumps builds elsewhere."""
    imports = dict(cfg.get('custom_imports') or dict(imports=[], allow_failed_imports=False))
    names = list(imports.get('imports') or [])
    if module not in names:
        imports['imports'] = names + [module]
        cfg.custom_imports = imports


def use_atomic_checkpoints(cfg: Any) -> None:
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook['type'] = 'AtomicCheckpointHook'
        _add_import(cfg, 'dat_det.engine')


def guard_nonfinite_loss(cfg: Any) -> None:
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'NonFiniteLossHook' for h in hooks):
        hooks.append(dict(type='NonFiniteLossHook', action='stop'))
    cfg.custom_hooks = hooks
    _add_import(cfg, 'dat_det.engine')


def skip_unreadable_train_images(cfg: Any) -> None:
    import dat_det.datasets.transforms  # noqa: F401  (registers LoadImageOrSkip)

    loader = cfg.get('train_dataloader') or {}
    for dataset in dataset_configs(loader.get('dataset')):
        for step in dataset.get('pipeline') or []:
            if isinstance(step, dict) and step.get('type') in ('LoadImageFromFile',
                                                               'mmdet.LoadImageFromFile'):
                step['type'] = 'LoadImageOrSkip'
                _add_import(cfg, 'dat_det.datasets.transforms')


def _pretrained_files(node: Any, key: str) -> Iterator[tuple[str, str]]:
    """(config key, checkpoint) of every ``Pretrained`` init_cfg under ``node``."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            yield f'{key}.checkpoint', node['checkpoint']
        for k, v in node.items():
            yield from _pretrained_files(v, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _pretrained_files(v, f'{key}.{i}')


def check_pretrained_files(cfg: Any) -> None:
    """Refuse a missing or unreadable local ``init_cfg=Pretrained`` file in one line."""
    for key, path in _pretrained_files(cfg.get('model'), 'model'):
        if path.startswith(_REMOTE_PREFIXES) or '://' in path:
            continue
        if not osp.isfile(path):
            where = (f'the official DAT / DAT++ ImageNet weights are published at '
                     f'{OFFICIAL_DAT_WEIGHTS} (file names in configs/dat/README.md, '
                     '"Pretrained backbones")'
                     if osp.basename(path).startswith('dat_') else
                     'download the weights or set the init_cfg to None to train from scratch')
            raise UserInputError(f'pretrained weights not found: {path} (config key {key}); '
                                 f'{where}')
        check_checkpoint(path, f'pretrained weights ({key})')
