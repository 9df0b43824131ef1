"""Check COCO-style dataset configs before a run starts, so mistakes fail in one line.

A missing dataset folder, an annotation file that is not COCO json, or an image listed in the
json but absent on disk is reported here instead of deep inside a data-loader worker.
"""
from __future__ import annotations

import json
import os.path as osp
from collections.abc import Iterator
from typing import Any

from .errors import UserInputError

_COCO_KEYS = ('images', 'annotations', 'categories')


def _coco_datasets(dataset_cfg: Any) -> Iterator[dict]:
    """Yield every leaf dataset config that has an ``ann_file`` (walks dataset wrappers)."""
    if not isinstance(dataset_cfg, dict):
        return
    if 'dataset' in dataset_cfg:
        yield from _coco_datasets(dataset_cfg['dataset'])
    for child in dataset_cfg.get('datasets', []) or []:
        yield from _coco_datasets(child)
    if dataset_cfg.get('ann_file'):
        yield dataset_cfg


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def check_coco_dataset(dataset_cfg: dict, split: str = 'train') -> None:
    """Raise UserInputError if the dataset's folder, json or any listed image is missing."""
    data_root = dataset_cfg.get('data_root') or ''
    if data_root and not osp.isdir(data_root):
        raise UserInputError(f'{split} dataset folder not found: {data_root}')
    ann_file = _join(data_root, dataset_cfg['ann_file'])
    if not osp.isfile(ann_file):
        raise UserInputError(f'{split} annotation file not found: {ann_file}')
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f'{split} annotation file is not valid json: {ann_file} '
                             f'({err})') from err
    missing_keys = [k for k in _COCO_KEYS if not isinstance(coco, dict) or k not in coco]
    if missing_keys:
        raise UserInputError(f'{split} annotation file is not COCO format: {ann_file} '
                             f'lacks {missing_keys}')
    prefix = (dataset_cfg.get('data_prefix') or {}).get('img', '')
    img_dir = _join(data_root, prefix)
    if not osp.isdir(img_dir):
        raise UserInputError(f'{split} image folder not found: {img_dir}')
    missing = [img['file_name'] for img in coco['images']
               if not osp.isfile(osp.join(img_dir, img['file_name']))]
    if missing:
        more = f' and {len(missing) - 1} more' if len(missing) > 1 else ''
        raise UserInputError(f'{split} image listed in {ann_file} not found: '
                             f'{osp.join(img_dir, missing[0])}{more}')


def check_dataloader_datasets(cfg: Any, splits: tuple[str, ...]) -> None:
    """Check the datasets of ``cfg.<split>_dataloader`` for each of ``splits``."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset_cfg in _coco_datasets(loader.get('dataset')):
            check_coco_dataset(dataset_cfg, split)
