"""Image files and data batches into a detector's input tensors, through its own test pipeline
and preprocessor (for the tools that look inside a model: FLOPs, pictures of sampling points,
ONNX export)."""
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn


@torch.no_grad()
def preprocess(model: nn.Module, data_batch: Dict[str, Any]
               ) -> Tuple[torch.Tensor, Optional[list]]:
    """The detector's own preprocessing: ``(B, 3, H, W)`` inputs and their data samples."""
    data = model.data_preprocessor(data_batch, training=False)
    return data['inputs'], data['data_samples']


@torch.no_grad()
def prepare_image(model: nn.Module, image_path: str) -> Tuple[torch.Tensor, list]:
    """One image file through the test pipeline of the model's config (``model.cfg``, as
    :func:`dat_det.apis.init_detector` sets it; annotations skipped) and the model's
    preprocessor: ``(1, 3, H, W)`` inputs and the data sample.

    Raises:
        UserInputError: the image is missing or unreadable.
    """
    from mmengine.dataset import Compose, pseudo_collate

    from dat_det.utils.errors import UserInputError

    if not osp.isfile(image_path):
        raise UserInputError(f'image not found: {image_path}')
    transforms = [t for t in model.cfg.test_dataloader.dataset.pipeline
                  if t['type'] != 'LoadAnnotations']
    try:
        data = Compose(transforms)(dict(img_path=image_path, img_id=0))
    except Exception as err:  # noqa: BLE001 - mmcv raises various errors on bad files
        raise UserInputError(f'cannot read image {image_path}: {err}') from err
    return preprocess(model, pseudo_collate([data]))
