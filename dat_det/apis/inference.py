"""A detector from a config and a checkpoint, run on images: mmdet's ``DetInferencer`` with
dat_det's checks (one-line errors for missing files, unreadable images and checkpoints that do
not fit the config; class names from the config when the checkpoint has none)."""
from __future__ import annotations

import os.path as osp
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch.nn as nn
from mmdet.apis import DetInferencer as MMDetInferencer
from mmdet.apis.det_inferencer import IMG_EXTENSIONS
from mmdet.datasets.transforms import InferencerLoader
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config

from dat_det.utils.checkpoint_files import load_checkpoint_file
from dat_det.utils.config import load_config
from dat_det.utils.errors import UserInputError, one_line


def check_checkpoint_fits(model: nn.Module, checkpoint: Any, name: str) -> None:
    """Raise unless ``checkpoint`` has exactly ``model``'s weights (names and shapes).

    mmengine loads checkpoints non-strictly and only warns, so a checkpoint of another
    model would silently leave a randomly initialised detector.
    """
    if not isinstance(checkpoint, Mapping):
        raise UserInputError(f'checkpoint {name} holds a {type(checkpoint).__name__}, '
                             'not a state dict')
    state = checkpoint.get('state_dict', checkpoint)
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    reshaped = [f'{k} {tuple(v.shape)} != {tuple(target[k].shape)}' for k, v in state.items()
                if k in target and hasattr(v, 'shape') and v.shape != target[k].shape]
    if missing or unexpected or reshaped:
        raise UserInputError(
            f"checkpoint {name} does not fit the config's model: {len(missing)} weights "
            f'missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, '
            f'{len(reshaped)} of another shape {reshaped[:3]}')


class _NamedReadErrors:
    """Wraps the pipeline's image loader: an image that cannot be read becomes a user error
    naming the file (mmcv raises a bare assertion or a decoder error)."""

    def __init__(self, loader: Callable) -> None:
        self.loader = loader

    def __call__(self, results: Any) -> Any:
        try:
            return self.loader(results)
        except Exception as err:  # noqa: BLE001 - re-raised with the file named
            if isinstance(results, str):
                raise UserInputError(f'cannot read image {results}: {one_line(err)}') from err
            raise


class DetInferencer(MMDetInferencer):
    """mmdet's ``DetInferencer`` on a dat_det (or any mmdet) config and checkpoint.

    Arguments as mmdet's (``model``: a config file or ``Config``; ``weights``: a checkpoint),
    plus ``cfg_options``. Differences: the config and checkpoint must exist and ``cfg_options``
    name existing keys; the checkpoint must fit the model exactly; a checkpoint without class
    names takes those of the config's test dataset (not COCO's); missing or unreadable images
    and folders without images raise :class:`UserInputError`; no progress bar by default.

    Example::

        inferencer = DetInferencer(CONFIG, CHECKPOINT, device='cpu')
        out = inferencer('image.jpg', out_dir='outputs', no_save_pred=False)
        out['predictions'][0]  # {'labels': [...], 'scores': [...], 'bboxes': [...]}
    """

    def __init__(self, model: Union[str, Path, Config], weights: Optional[str] = None,
                 device: Optional[str] = None, scope: Optional[str] = None,
                 palette: str = 'none', show_progress: bool = False,
                 cfg_options: Optional[dict] = None) -> None:
        cfg = load_config(str(model), cfg_options) if isinstance(model, (str, Path)) else model
        self._checkpoint_name = weights
        super().__init__(model=cfg, weights=weights, device=device,
                         scope=scope or cfg.get('default_scope', 'mmdet'), palette=palette,
                         show_progress=show_progress)

    def _init_model(self, cfg: Config, weights: Optional[str], device: str = 'cpu'
                    ) -> nn.Module:
        # mmengine's version, with a checkpoint read that fails in one line; a config is
        # always given here, so the config-from-checkpoint branch is not needed.
        checkpoint = (load_checkpoint_file(weights, map_location='cpu')
                      if weights is not None else None)
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        return model.to(device).eval()

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Any,
                               cfg: Config) -> None:
        if checkpoint is None:
            super()._load_weights_to_model(model, checkpoint, cfg)
            return
        check_checkpoint_fits(model, checkpoint, self._checkpoint_name)
        meta = checkpoint.get('meta') or {}
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='dataset_meta or class names')
            super()._load_weights_to_model(model, checkpoint, cfg)
        if 'dataset_meta' not in meta and 'CLASSES' not in meta:
            model.dataset_meta['classes'] = _config_metainfo(cfg)['classes']

    def _init_pipeline(self, cfg: Config) -> Callable:
        pipeline = super()._init_pipeline(cfg)
        pipeline.transforms = [_NamedReadErrors(t) if isinstance(t, InferencerLoader) else t
                               for t in pipeline.transforms]
        return pipeline

    def list_inputs(self, inputs: Any) -> list:
        """The images ``inputs`` stands for, as ``__call__`` takes them: a file, the images of
        a folder (sorted), an array, or a list of these; files are checked to exist."""
        return self._inputs_to_list(inputs)

    def _inputs_to_list(self, inputs: Any) -> list:
        if isinstance(inputs, (str, Path)):
            inputs = str(inputs)
            if osp.isdir(inputs):
                found = super()._inputs_to_list(inputs)
                if not found:
                    raise UserInputError(
                        f'no images ({" ".join(IMG_EXTENSIONS)}) in folder {inputs}')
                return sorted(found)
        items = super()._inputs_to_list(inputs)
        for item in items:
            if isinstance(item, str) and '://' not in item and not osp.isfile(item):
                raise UserInputError(f'image not found: {item}')
        return items


def _config_metainfo(cfg: Config) -> dict:
    """``metainfo`` of the config's test dataset (classes, palette), built lazily."""
    dataset_cfg = dict(cfg.test_dataloader.dataset, lazy_init=True)
    return DATASETS.build(dataset_cfg).metainfo


def init_detector(config: Union[str, Path, Config], checkpoint: Optional[str] = None,
                  device: Optional[str] = None, cfg_options: Optional[dict] = None
                  ) -> nn.Module:
    """The detector of ``config`` with ``checkpoint``'s weights, in eval mode on ``device``
    (default: CUDA when available), for mmdet's ``inference_detector``.

    As mmdet's ``init_detector``, with :class:`DetInferencer`'s checks.
    """
    return DetInferencer(config, checkpoint, device=device, cfg_options=cfg_options).model
