"""A small deterministic COCO-format dataset of rendered shapes, for demos and tests.

Every image shows a few non-overlapping filled shapes (the categories below) in random colours
on a varied background (gradients, noise, stripes, checkerboards, blobs). Annotations carry
boxes and polygon instance masks, so both bbox and segm COCO evaluation apply. The generator is
seeded: the same arguments always write the same files.
"""
from __future__ import annotations

import json
import math
import os.path as osp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPE_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
SPLITS = ('train', 'val')


@dataclass(frozen=True)
class ShapesConfig:
    """Sizes of the generated dataset."""
    num_train: int = 480
    num_val: int = 120
    min_size: int = 160
    max_size: int = 224
    max_objects: int = 4
    min_object: int = 24
    max_object: int = 72
    seed: int = 0


def _unit_polygon(name: str, angle: float) -> np.ndarray:
    """Outline of a shape of radius 1 around the origin, rotated by ``angle``: (N, 2)."""
    if name == 'circle':
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == 'square':
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * 0.8
    elif name == 'triangle':
        t = np.array([90, 210, 330]) * math.pi / 180
        pts = np.stack([np.cos(t), -np.sin(t)], 1)
    elif name == 'star':
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif name == 'cross':
        a, b = 1.0, 0.33
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]], dtype=float)
    else:
        raise ValueError(f'unknown shape {name!r}; expected one of {SHAPE_CLASSES}')
    if name != 'circle':
        c, s = math.cos(angle), math.sin(angle)
        pts = pts @ np.array([[c, -s], [s, c]])
    return pts


def _background(rng: np.random.RandomState, w: int, h: int) -> Image.Image:
    """A random background of one of five kinds: (h, w, 3) uint8 image."""
    kind = rng.randint(5)
    c0, c1 = rng.randint(0, 256, 3), rng.randint(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 1:  # stripes
        t = (np.sin((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / rng.uniform(2, 8))
             + 1) / 2
    elif kind == 2:  # checkerboard
        cell = rng.randint(8, 32)
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == 3:  # smooth blobs
        small = rng.uniform(0, 1, (max(h // 32, 2), max(w // 32, 2))).astype(np.float32)
        t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(
            (w, h), Image.BICUBIC), dtype=np.float32) / 255
    else:  # flat colour
        t = np.zeros((h, w), np.float32)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img = img + rng.normal(0, rng.uniform(0, 18), img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _place_objects(rng: np.random.RandomState, w: int, h: int, cfg: ShapesConfig) -> list:
    """Non-overlapping (category, centre, radius, angle) tuples."""
    objects: list = []
    for _ in range(rng.randint(1, cfg.max_objects + 1)):
        for _attempt in range(20):
            r = rng.uniform(cfg.min_object, cfg.max_object) / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            if all(math.hypot(cx - ox, cy - oy) > r + orad + 2
                   for _, (ox, oy), orad, _ in objects):
                objects.append((rng.randint(len(SHAPE_CLASSES)), (cx, cy), r,
                                rng.uniform(0, 2 * math.pi)))
                break
    return objects


def _render_image(rng: np.random.RandomState, image_id: int, cfg: ShapesConfig):
    """Render one image; returns (PIL image, list of COCO annotations without ids)."""
    w, h = rng.randint(cfg.min_size, cfg.max_size + 1, 2)
    img = _background(rng, int(w), int(h))
    draw = ImageDraw.Draw(img)
    anns = []
    for cat, (cx, cy), r, angle in _place_objects(rng, int(w), int(h), cfg):
        poly = _unit_polygon(SHAPE_CLASSES[cat], angle) * r + np.array([cx, cy])
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        draw.polygon([tuple(p) for p in poly], fill=colour,
                     outline=tuple(255 - c for c in colour))
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        x_, y_ = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(np.dot(x_, np.roll(y_, 1)) - np.dot(y_, np.roll(x_, 1))))
        anns.append(dict(
            image_id=image_id, category_id=cat + 1, iscrowd=0, area=round(area, 2),
            bbox=[round(float(x0), 2), round(float(y0), 2),
                  round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]]))
    if rng.rand() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return img, anns


def generate_shapes_dataset(root: str | Path, cfg: ShapesConfig | None = None,
                            progress: bool = False) -> dict:
    """Write ``root/{train,val}/*.jpg`` and ``root/annotations/instances_{train,val}.json``.

    Returns the number of images per split. Existing files are overwritten.
    """
    cfg = cfg or ShapesConfig()
    root = Path(root)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(SHAPE_CLASSES)]
    counts = {}
    for split_index, (split, num) in enumerate(zip(SPLITS, (cfg.num_train, cfg.num_val))):
        rng = np.random.RandomState(cfg.seed * 1000 + split_index)
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        ids = range(1, num + 1)
        if progress:
            from tqdm import tqdm
            ids = tqdm(ids, desc=f'shapes/{split}', unit='img')
        for image_id in ids:
            img, anns = _render_image(rng, image_id, cfg)
            file_name = f'{image_id:06d}.jpg'
            img.save(root / split / file_name, quality=92)
            images.append(dict(id=image_id, file_name=file_name,
                               width=img.width, height=img.height))
            for ann in anns:
                ann['id'] = len(annotations) + 1
                annotations.append(ann)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        counts[split] = num
    return counts


def shapes_dataset_exists(root: str | Path) -> bool:
    """Whether both splits' annotation files exist under ``root``."""
    return all(osp.isfile(osp.join(root, 'annotations', f'instances_{s}.json')) for s in SPLITS)
