"""Detector inputs for the analysis tools: random batches and dataloader batches (model loading
and image files: :mod:`dat_det.apis`)."""
from typing import Any, Dict, Iterator, Sequence

import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData


def random_batch(size: Sequence[int], batch_size: int = 1, num_classes: int = 1,
                 num_boxes: int = 0, with_masks: bool = False, seed: int = 0) -> Dict[str, Any]:
    """Random uint8 images ``(3, H, W)`` and data samples, as a dataloader yields; with
    ``num_boxes`` random ground-truth boxes, labels below ``num_classes`` and, if asked,
    box-filling masks (what a training step needs)."""
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    inputs, samples = [], []
    for index in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen,
                                    dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(height, width),
                                             ori_shape=(height, width),
                                             scale_factor=(1.0, 1.0), img_id=index))
        if num_boxes:
            xy = torch.rand(num_boxes, 2, generator=gen) * torch.tensor([width, height]) * 0.6
            wh = (torch.rand(num_boxes, 2, generator=gen) * 0.3 + 0.05) * torch.tensor(
                [width, height])
            boxes = torch.cat([xy, xy + wh], 1)
            sample.gt_instances = InstanceData(
                bboxes=boxes, labels=torch.randint(0, num_classes, (num_boxes, ), generator=gen))
            if with_masks:
                sample.gt_instances.masks = box_masks(boxes, height, width)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def random_image_batch(height: int, width: int, seed: int = 0) -> Dict[str, Any]:
    """One random uint8 image ``(3, H, W)`` and its data sample, as a dataloader yields."""
    return random_batch((height, width), seed=seed)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> BitmapMasks:
    """Instance masks that fill their ``(n, 4)`` xyxy boxes."""
    ys = torch.arange(height).view(1, height, 1) + 0.5
    xs = torch.arange(width).view(1, 1, width) + 0.5
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return BitmapMasks(inside.numpy().astype('uint8'), height, width)


def dataloader_batches(dataloader: Any, num: int) -> Iterator[Dict[str, Any]]:
    """The first ``num`` batches of ``dataloader``."""
    for index, batch in enumerate(dataloader):
        if index == num:
            return
        yield batch
