"""Detector inputs: random images, dataloader batches, image files through the test pipeline."""
import os.path as osp
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from mmdet.structures import DetDataSample
from torch import nn


def random_image_batch(height: int, width: int, seed: int = 0) -> Dict[str, Any]:
    """One random uint8 image ``(3, H, W)`` and its data sample, as a dataloader yields."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                         scale_factor=(1.0, 1.0), img_id=0))
    return dict(inputs=[image], data_samples=[sample])


def dataloader_batches(dataloader: Any, num: int) -> Iterator[Dict[str, Any]]:
    """The first ``num`` batches of ``dataloader``."""
    for index, batch in enumerate(dataloader):
        if index == num:
            return
        yield batch


@torch.no_grad()
def preprocess(model: nn.Module, data_batch: Dict[str, Any]
               ) -> Tuple[torch.Tensor, Optional[list]]:
    """The detector's own preprocessing: ``(B, 3, H, W)`` inputs and their data samples."""
    data = model.data_preprocessor(data_batch, training=False)
    return data['inputs'], data['data_samples']


def load_detector(config: str, checkpoint: Optional[str], cfg_options: Optional[dict] = None,
                  device: str = 'cpu') -> Tuple[nn.Module, Any]:
    """Build the config's detector in eval mode and load ``checkpoint`` (random if None).

    Raises:
        UserInputError: the config or checkpoint file is missing.
    """
    from mmdet.apis import init_detector

    from dat_det.utils.checkpoint_compat import allow_mmengine_checkpoints
    from dat_det.utils.config import load_config
    from dat_det.utils.errors import UserInputError

    cfg = load_config(config, cfg_options)
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise UserInputError(f'checkpoint not found: {checkpoint}')
    allow_mmengine_checkpoints()
    model = init_detector(cfg, checkpoint, device=device)
    return model.eval(), cfg


@torch.no_grad()
def prepare_image(model: nn.Module, cfg: Any, image_path: str
                  ) -> Tuple[torch.Tensor, list]:
    """One image file through the config's test pipeline (annotations skipped) and the model's
    preprocessor: ``(1, 3, H, W)`` inputs and the data sample.

    Raises:
        UserInputError: the image is missing or unreadable.
    """
    from mmengine.dataset import Compose, pseudo_collate

    from dat_det.utils.errors import UserInputError

    if not osp.isfile(image_path):
        raise UserInputError(f'image not found: {image_path}')
    transforms = [t for t in cfg.test_dataloader.dataset.pipeline
                  if t['type'] != 'LoadAnnotations']
    try:
        data = Compose(transforms)(dict(img_path=image_path, img_id=0))
    except Exception as err:  # noqa: BLE001 - mmcv raises various errors on bad files
        raise UserInputError(f'cannot read image {image_path}: {err}') from err
    return preprocess(model, pseudo_collate([data]))
