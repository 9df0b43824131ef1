"""Check COCO-style dataset configs before a run starts, so mistakes fail in one line.

A missing dataset folder, an annotation file that is not COCO json, an image listed in the
json but absent on disk, a malformed box, or (for evaluation splits, which cannot skip samples)
an unreadable image or one whose size differs from the json is reported here instead of deep
inside a data-loader worker. What training handles on its own is counted in one note per split,
the annotations by id: those mmdet's ``CocoDataset`` drops (boxes of zero or negative size or
outside their image, a ``category_id`` the file does not define, a category outside the
dataset's classes) and images without annotations.
"""
from __future__ import annotations

import json
import math
import os.path as osp
from collections.abc import Sequence
from typing import Any

from .config import dataset_configs
from .errors import UserInputError

_COCO_KEYS = ('images', 'annotations', 'categories')
#: annotations named per reason in a note (the rest are counted)
NAMED_ANNOTATIONS = 3


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def check_coco_dataset(dataset_cfg: dict, split: str = 'train') -> str | None:
    """Raise UserInputError if the dataset's folder, json or any listed image is missing, or an
    annotation is malformed; for ``test_mode`` datasets also if an image cannot be opened or
    its size differs from the json. Returns a note counting what training will ignore."""
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
    check_image_fields(coco, ann_file, split)
    counts = check_annotations(coco, ann_file, split, dataset_classes(dataset_cfg))
    if dataset_cfg.get('test_mode'):
        check_image_headers(coco, img_dir, split)
    return annotation_note(counts, ann_file, split)


def dataset_classes(dataset_cfg: dict) -> tuple[str, ...] | None:
    """The class names a dataset keeps: its config's ``metainfo``, else those of its type
    (``CocoDataset``: COCO's 80); None when they cannot be known."""
    classes = (dataset_cfg.get('metainfo') or {}).get('classes')
    if classes is not None:
        return tuple(classes)
    try:
        from mmdet.registry import DATASETS
        dataset_type = DATASETS.get(dataset_cfg.get('type', 'CocoDataset'))
    except ImportError:
        return None
    classes = (getattr(dataset_type, 'METAINFO', None) or {}).get('classes')
    return tuple(classes) if classes else None


def check_image_fields(coco: dict, ann_file: str, split: str) -> None:
    """Every image needs an id, a file name and a positive height and width."""
    for img in coco['images']:
        for key in ('id', 'file_name', 'height', 'width'):
            if key not in img:
                raise UserInputError(f'{split} image entry in {ann_file} lacks {key!r}: {img}')
        if not all(isinstance(img[k], (int, float)) and img[k] >= 1 for k in ('height',
                                                                              'width')):
            raise UserInputError(f'{split} image {img["file_name"]} in {ann_file} has height/'
                                 f'width {img["height"]}/{img["width"]}, not positive sizes')


def _box_inside(box: list, img: dict) -> float:
    """Area of the part of an ``[x, y, w, h]`` box inside its image, as mmdet computes it."""
    x, y, w, h = box
    inter_w = max(0, min(x + w, img['width']) - max(x, 0))
    inter_h = max(0, min(y + h, img['height']) - max(y, 0))
    return inter_w * inter_h


def check_annotations(coco: dict, ann_file: str, split: str,
                      classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Refuse malformed annotations; find those mmdet's ``CocoDataset`` will drop.

    Returns:
        ``bad_size``, ``outside``, ``unknown_category``, ``other_class``: the dropped
        annotations, each named ``annotation ID (FILE...)`` under the first of these reasons
        it meets (``classes``: the class names the dataset keeps, None for all);
        ``no_annotations``, ``only_ignored``: image counts.
    """
    images = {img['id']: img for img in coco['images']}
    categories = {cat.get('id'): cat.get('name') for cat in coco['categories']}
    kept = set(categories) if classes is None else {
        cid for cid, name in categories.items() if name in set(classes)}
    dropped: dict[str, list[str]] = dict(bad_size=[], outside=[], unknown_category=[],
                                         other_class=[])
    valid_per_image = {img_id: 0 for img_id in images}
    annotated = set()
    for ann in coco['annotations']:
        box = ann.get('bbox')
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            raise UserInputError(f'{split} annotation {ann.get("id")} in {ann_file} has bbox '
                                 f'{box!r}, not four finite numbers [x, y, w, h]')
        if ann.get('image_id') not in images:
            raise UserInputError(f'{split} annotation {ann.get("id")} in {ann_file} refers to '
                                 f'image_id {ann.get("image_id")!r}, which is not in its images')
        if not isinstance(ann.get('area'), (int, float)):
            raise UserInputError(f'{split} annotation {ann.get("id")} in {ann_file} lacks a '
                                 'numeric area')
        if ann.get('ignore', False) or ann.get('iscrowd', 0):
            continue
        image = images[ann['image_id']]
        annotated.add(ann['image_id'])
        where = f'annotation {ann.get("id")} ({image["file_name"]}'
        category = ann.get('category_id')
        if ann['area'] <= 0 or box[2] < 1 or box[3] < 1:
            dropped['bad_size'].append(f'{where})')
        elif _box_inside(box, image) == 0:
            dropped['outside'].append(f'{where})')
        elif category not in categories:
            dropped['unknown_category'].append(f'{where}, category_id {category!r})')
        elif category not in kept:
            dropped['other_class'].append(f'{where}, {categories[category]!r})')
        else:
            valid_per_image[ann['image_id']] += 1
    return dict(dropped, no_annotations=len(images) - len(annotated),
                only_ignored=sum(1 for i in annotated if valid_per_image[i] == 0))


def _named(names: list[str]) -> str:
    more = len(names) - NAMED_ANNOTATIONS
    return ', '.join(names[:NAMED_ANNOTATIONS]) + (f' and {more} more' if more > 0 else '')


_DROP_REASONS = (
    ('bad_size', 'boxes with zero or negative size are ignored'),
    ('outside', 'boxes entirely outside their image are ignored'),
    ('unknown_category', 'annotations whose category_id is not a category of the file are '
                         'ignored'),
    ('other_class', "annotations of categories outside the dataset's classes are ignored"),
)


def annotation_note(counts: dict[str, Any], ann_file: str, split: str) -> str | None:
    """One line saying what will be ignored (the annotations by id), or None when nothing
    is."""
    parts = [f'{len(counts[key])} {text}: {_named(counts[key])}'
             for key, text in _DROP_REASONS if counts[key]]
    if counts['no_annotations']:
        parts.append(f"{counts['no_annotations']} images without annotations "
                     + ('are skipped' if split == 'train' else 'have no ground truth'))
    if counts['only_ignored']:
        parts.append(f"{counts['only_ignored']} images whose every box is ignored train as "
                     'background')
    return f'{split} data {ann_file}: ' + '; '.join(parts) if parts else None


def check_image_headers(coco: dict, img_dir: str, split: str) -> None:
    """Open every image's header: unreadable files and sizes other than the json's are refused
    (evaluation datasets cannot skip a sample). Costs one small read per image."""
    from PIL import Image, UnidentifiedImageError

    for img in coco['images']:
        path = osp.join(img_dir, img['file_name'])
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise UserInputError(f'{split} image {path} cannot be read: '
                                 f'{" ".join(str(err).split())[:150]}') from err
        if (width, height) != (img['width'], img['height']):
            raise UserInputError(f'{split} image {path} is {width}x{height} but the annotation '
                                 f"file says {img['width']}x{img['height']}")


def check_dataloader_datasets(cfg: Any, splits: tuple[str, ...]) -> list[str]:
    """Check the datasets of ``cfg.<split>_dataloader`` for each of ``splits``; the notes on
    what training will ignore (one line per dataset that ignores something)."""
    notes = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset_cfg in dataset_configs(loader.get('dataset')):
            if not dataset_cfg.get('ann_file'):
                continue
            note = check_coco_dataset(dataset_cfg, split)
            if note:
                notes.append(note)
    return notes
