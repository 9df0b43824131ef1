"""Pictures of deformable attention on a few val images after validation."""
import os.path as osp
from typing import Any, Dict, Optional

import mmcv
import torch
from mmdet.registry import HOOKS
from mmengine.dataset import pseudo_collate
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from dat_det.visualization import deformable_pictures, figure_to_rgb


@HOOKS.register_module()
class DeformableVisualizationHook(Hook):
    """After every ``interval``-th validation, draw where deformable attention looks on the
    first ``num_images`` val images (DAT keys and/or Deformable DETR sampling points, see
    :func:`dat_det.visualization.deformable_pictures`).

    Pictures go through the runner's visualizer: its ``LocalVisBackend`` writes them to
    ``<work_dir>/<timestamp>/vis_data/vis_image/deformable_<image>_<kind>_<epoch>.png``, a
    ``TensorboardVisBackend`` (when configured) to TensorBoard.

    Config::

        custom_imports = dict(imports=['dat_det.models', 'dat_det.engine'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='DeformableVisualizationHook', num_images=2)]

    Args:
        interval: every how many validations to draw.
        num_images: val images drawn.
        top_k: Deformable DETR detections drawn.
        stage, block: DAT block drawn (default: the last deformable block).
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1, num_images: int = 2, top_k: int = 5,
                 stage: Optional[int] = None, block: Optional[int] = None) -> None:
        if interval < 1 or num_images < 1 or top_k < 1:
            raise ValueError('interval, num_images and top_k must be >= 1')
        self.interval = interval
        self.num_images = num_images
        self.options = dict(top_k=top_k, stage=stage, block=block)
        self._validations = 0

    @master_only
    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._validations += 1
        if self._validations % self.interval:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        dataset = runner.val_dataloader.dataset
        was_training = model.training
        model.eval()
        try:
            for index in range(min(self.num_images, len(dataset))):
                self._draw(runner, model, dataset[index])
        finally:
            model.train(was_training)

    @torch.no_grad()
    def _draw(self, runner, model, data: Dict[str, Any]) -> None:
        batch = model.data_preprocessor(pseudo_collate([data]), False)
        sample = batch['data_samples'][0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        classes = (getattr(runner.val_dataloader.dataset, 'metainfo', None) or {}).get('classes')
        pictures = deformable_pictures(model, batch['inputs'], batch['data_samples'], image,
                                       class_names=classes, **self.options)
        stem = osp.splitext(osp.basename(sample.img_path))[0]
        for picture in pictures:
            runner.visualizer.add_image(f'deformable_{stem}_{picture.name}',
                                        figure_to_rgb(picture.figure), step=runner.epoch)
