"""Pictures of where a model's deformable attention looks, for one preprocessed image."""
import textwrap
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from dat_det.models.layers import DAttention
from dat_det.models.layers.deformable_detr import MSDeformAttn

from .capture import dat_positions, dattention_positions, record_msda
from .draw import dat_figure, msda_figure
from .geometry import dat_to_pixels, inside, msda_to_pixels


@dataclass
class DeformablePicture:
    """A figure and the pixel (x, y) of every point it plots inside the image ``(N, 2)``."""

    name: str
    figure: Figure
    points: np.ndarray


def has_dat_backbone(model: nn.Module) -> bool:
    return hasattr(getattr(model, 'backbone', None), 'forward_with_positions')


def has_dattention(model: nn.Module) -> bool:
    return any(isinstance(m, DAttention) for m in model.modules())


def has_msda(model: nn.Module) -> bool:
    return any(isinstance(m, MSDeformAttn) for m in model.modules())


def dat_picture(model: nn.Module, inputs: Tensor, sample: Any, image: np.ndarray,
                stage: Optional[int] = None, block: Optional[int] = None) -> DeformablePicture:
    """Reference grid and deformed keys of every group of one DAT deformable block.

    Args:
        inputs: ``(B, 3, H, W)`` preprocessed; the first image is drawn.
        sample: its data sample (``scale_factor``).
        image: original ``(H0, W0, 3)`` RGB.
        stage, block: the block (default: the last deformable block of ``stage``, default
            stage: the last stage with one).
    """
    blocks = dat_positions(model.backbone, inputs)
    stages = sorted({b.stage for b in blocks})
    stage = stages[-1] if stage is None else stage
    candidates = [b for b in blocks if b.stage == stage and (block is None or b.block == block)]
    if not candidates:
        where = ', '.join(f'stage {b.stage} block {b.block}' for b in blocks)
        raise ValueError(f'no deformable block at stage {stage}'
                         f"{'' if block is None else f' block {block}'}; the backbone has: "
                         f'{where}')
    chosen = candidates[-1]
    scale = sample.metainfo.get('scale_factor', (1.0, 1.0))
    args = (chosen.map_size, tuple(inputs.shape[-2:]), scale)
    refs = dat_to_pixels(chosen.ref, *args)
    positions = dat_to_pixels(chosen.pos, *args)
    title = (f'DAT stage {chosen.stage} block {chosen.block}: reference points (white) and '
             f'deformed keys (red) of each group')
    fig = dat_figure(image, refs, positions, title)
    pts = positions.reshape(-1, 2)
    return DeformablePicture(f'dat_stage{chosen.stage}_block{chosen.block}', fig,
                             pts[inside(pts, image.shape[:2])])


def _site_descriptions(model: nn.Module) -> dict:
    """``{block module name: 'before backbone.stage4.1'}`` for blocks inserted by
    ``WithDAttention``."""
    try:
        from dat_det.models.plugins import dattention_sites
    except ImportError:  # pragma: no cover - mmdet missing
        return {}
    described = {}
    for site in dattention_sites(model):
        index = '' if site.index is None else f'[{site.index}]'
        described[f'dattention.{site.name}'] = f'{site.where} {site.module_path}{index}'
    return described


def dattention_pictures(model: nn.Module, inputs: Tensor, samples: Sequence[Any],
                        image: np.ndarray, block: Optional[str] = None
                        ) -> List[DeformablePicture]:
    """Reference grid and deformed keys of each group of the plug-in DAttention blocks of a
    CNN detector: one picture per block, or of the block whose module name (or site, e.g.
    ``before backbone.stage4.1``) is ``block``.

    Args:
        inputs: ``(B, 3, H, W)`` preprocessed; the first image is drawn.
        samples: its data samples (``scale_factor``).
        image: original ``(H0, W0, 3)`` RGB.
    """
    found = dattention_positions(model, inputs, samples)
    described = _site_descriptions(model)
    if block is not None:
        chosen = [b for b in found if block in (b.name, described.get(b.name))]
        if not chosen:
            where = ', '.join(b.name for b in found)
            raise ValueError(f'no DAttention block {block!r}; the model has: {where}')
        found = chosen
    scale = samples[0].metainfo.get('scale_factor', (1.0, 1.0))
    pictures = []
    for positions in found:
        args = (positions.map_size, tuple(inputs.shape[-2:]), scale)
        refs = dat_to_pixels(positions.ref, *args)
        keys = dat_to_pixels(positions.pos, *args)
        height, width = positions.map_size
        where = described.get(positions.name, positions.name)
        # wrapped to the width of the panels (one per group, up to five a row)
        columns = min(positions.pos.shape[0], 5)
        title = textwrap.fill(f'DAttention {where} ({height}x{width} map): reference points '
                              '(white), deformed keys (red)', width=36 * columns)
        fig = dat_figure(image, refs, keys, title)
        pts = keys.reshape(-1, 2)
        name = positions.name.removeprefix('dattention.').replace('.', '_')
        pictures.append(DeformablePicture(f'dattention_{name}', fig,
                                          pts[inside(pts, image.shape[:2])]))
    return pictures


def _last_layer_detections(model: nn.Module, inputs: Tensor, samples: Sequence[Any]):
    """Run the detector once, recording attention. Returns records, the last layer's scores
    ``(Nq,)``, labels ``(Nq,)`` and boxes ``(Nq, 4)`` normalized (cx, cy, w, h)."""
    with torch.no_grad(), record_msda(model) as records:
        feats = model.extract_feat(inputs[:1])
        head_inputs = model.forward_transformer(feats, list(samples[:1]))
        cls_scores, boxes = model.bbox_head(head_inputs['hidden_states'],
                                            head_inputs['references'])
    scores, labels = cls_scores[-1][0].sigmoid().max(-1)
    return records, scores, labels, boxes[-1][0]


def _boxes_to_pixels(boxes: Tensor, sample: Any) -> np.ndarray:
    """Normalized (cx, cy, w, h) over the image -> original-image (x1, y1, x2, y2)."""
    height, width = sample.metainfo['img_shape'][:2]
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    xyxy = xyxy * xyxy.new_tensor([width, height, width, height])
    scale = np.asarray(sample.metainfo.get('scale_factor', (1.0, 1.0))[:2], dtype=np.float64)
    return xyxy.double().cpu().numpy() / np.tile(scale, 2)


def _layer_names(records: dict, prefix: str) -> List[str]:
    return sorted((n for n in records if n.startswith(prefix)),
                  key=lambda n: [int(t) if t.isdigit() else t for t in n.split('.')])


def ddetr_pictures(model: nn.Module, inputs: Tensor, samples: Sequence[Any],
                   image: np.ndarray, top_k: int = 5, layer: int = -1,
                   encoder_points: Sequence[Tuple[float, float]] = (),
                   encoder_level: int = 0, class_names: Optional[Sequence[str]] = None
                   ) -> List[DeformablePicture]:
    """Sampling points of the top-``k`` detections' decoder queries (and of the encoder
    queries at ``encoder_points``, original-image pixels, on ``encoder_level``), per level,
    coloured by attention weight, with the detected boxes.

    Args:
        layer: decoder (and encoder) layer whose attention is drawn.
    """
    sample = samples[0]
    records, scores, labels, boxes = _last_layer_detections(model, inputs, samples)
    batch_shape = sample.metainfo.get('batch_input_shape', tuple(inputs.shape[-2:]))
    scale = sample.metainfo.get('scale_factor', (1.0, 1.0))
    pictures = []

    decoder = _layer_names(records, 'decoder.')
    name = decoder[layer]
    call = records[name][0]
    top = scores.topk(min(top_k, scores.numel())).indices
    locs = msda_to_pixels(call.locations[0, top], batch_shape, scale)
    weights = call.weights[0, top].cpu().numpy()
    texts = [f'{_class_name(class_names, int(labels[q]))} {float(scores[q]):.2f}' for q in top]
    levels = [f'level {lvl} ({h}x{w})' for lvl, (h, w) in
              enumerate(call.spatial_shapes.tolist())]
    fig = msda_figure(image, locs, weights, levels,
                      f'{name}: sampling points of the top {len(top)} detections',
                      boxes=_boxes_to_pixels(boxes[top], sample), box_texts=texts)
    pictures.append(DeformablePicture('decoder', fig, _kept(locs, image)))

    if encoder_points:
        name = _layer_names(records, 'encoder.')[layer]
        call = records[name][0]
        queries, anchors = _encoder_queries(call.spatial_shapes, encoder_level,
                                            encoder_points, batch_shape, scale)
        locs = msda_to_pixels(call.locations[0, queries], batch_shape, scale)
        weights = call.weights[0, queries].cpu().numpy()
        fig = msda_figure(image, locs, weights, levels,
                          f'{name}: sampling points of {len(queries)} level-{encoder_level} '
                          'queries (+)', anchors=anchors)
        pictures.append(DeformablePicture('encoder', fig, _kept(locs, image)))
    return pictures


def _encoder_queries(spatial_shapes: Tensor, level: int, points: Sequence[Tuple[float, float]],
                     batch_shape: Sequence[int], scale: Sequence[float]):
    """Flattened indices of the level-``level`` cells under original-image ``points``, and
    the cells' centres in original-image pixels."""
    shapes = spatial_shapes.tolist()
    if not 0 <= level < len(shapes):
        raise ValueError(f'encoder level {level} out of range [0, {len(shapes) - 1}]')
    height, width = shapes[level]
    start = sum(h * w for h, w in shapes[:level])
    cell = np.array([batch_shape[1] / width, batch_shape[0] / height])
    indices, centres = [], []
    for x, y in points:
        col, row = (np.array([x, y]) * np.asarray(scale[:2]) // cell).astype(int)
        col, row = min(max(col, 0), width - 1), min(max(row, 0), height - 1)
        indices.append(start + row * width + col)
        centres.append((np.array([col, row]) + 0.5) * cell / np.asarray(scale[:2]))
    return torch.tensor(indices), np.stack(centres)


def _kept(points: np.ndarray, image: np.ndarray) -> np.ndarray:
    pts = points.reshape(-1, 2)
    return pts[inside(pts, image.shape[:2])]


def _class_name(names: Optional[Sequence[str]], label: int) -> str:
    return names[label] if names is not None and label < len(names) else str(label)


def deformable_pictures(model: nn.Module, inputs: Tensor, samples: Sequence[Any],
                        image: np.ndarray, **options) -> List[DeformablePicture]:
    """All pictures the model supports: DAT keys (``stage``, ``block``), the deformed keys of
    plug-in DAttention blocks (``dattention``: one block's name or site, default all) and
    Deformable DETR sampling points (``top_k``, ``layer``, ``encoder_points``,
    ``encoder_level``, ``class_names``).

    Raises:
        ValueError: the model has no DAT backbone, DAttention block or deformable attention.
    """
    pictures = []
    if has_dat_backbone(model):
        pictures.append(dat_picture(model, inputs, samples[0], image,
                                    options.get('stage'), options.get('block')))
    if has_dattention(model):
        pictures += dattention_pictures(model, inputs, samples, image,
                                        options.get('dattention'))
    if has_msda(model):
        keys = ('top_k', 'layer', 'encoder_points', 'encoder_level', 'class_names')
        pictures += ddetr_pictures(model, inputs, samples, image,
                                   **{k: options[k] for k in keys if k in options})
    if not pictures:
        raise ValueError(f'{type(model).__name__} has no DAT backbone, DAttention block or '
                         'deformable attention to draw')
    return pictures
