"""Loading configs with command-line overrides that must name existing keys, and walking the
dataset configs of a dataloader."""
from __future__ import annotations

import difflib
import os.path as osp
from collections.abc import Iterator
from typing import Any

from mmengine.config import Config, ConfigDict

from .errors import UserInputError


def _check_override_key(cfg: Config, key: str) -> None:
    """Raise UserInputError unless the dotted ``key`` exists in ``cfg``."""
    node: Any = cfg
    walked = []
    for part in key.split('.'):
        if isinstance(node, (list, tuple)) and part.lstrip('-').isdigit():
            if not -len(node) <= int(part) < len(node):
                raise UserInputError(
                    f"--cfg-options key '{key}': index {part} out of range for "
                    f"'{'.'.join(walked)}' (length {len(node)})")
            node = node[int(part)]
        elif isinstance(node, (dict, ConfigDict, Config)) and part in node:
            node = node[part]
        else:
            where = '.'.join(walked) or 'the config'
            options = list(node.keys()) if isinstance(node, (dict, ConfigDict, Config)) else []
            close = difflib.get_close_matches(part, options, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise UserInputError(f"--cfg-options key '{key}' does not exist: "
                                 f"no '{part}' in {where}{hint}")
        walked.append(part)


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read a config file and apply ``--cfg-options``; every overridden key must exist."""
    if not osp.isfile(path):
        raise UserInputError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, ImportError) as err:
        raise UserInputError(f'cannot load config {path}: {err}') from err
    for key in cfg_options or {}:
        _check_override_key(cfg, key)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def dataset_configs(dataset_cfg: Any) -> Iterator[dict]:
    """Every dataset config of a dataloader's ``dataset``: the config itself, then, depth
    first, those its wrappers hold (``dataset`` of ``RepeatDataset`` / ``ClassBalancedDataset``
    / ``MultiImageMixDataset``, ``datasets`` of ``ConcatDataset``)."""
    if not isinstance(dataset_cfg, dict):
        return
    yield dataset_cfg
    yield from dataset_configs(dataset_cfg.get('dataset'))
    for child in dataset_cfg.get('datasets') or []:
        yield from dataset_configs(child)
