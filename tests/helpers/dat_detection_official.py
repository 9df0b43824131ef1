"""Facts about DAT-Detection's published detectors for tests, and checkpoints laid out as theirs.

``data/dat_detection_official_keys.json``: the tensor names and shapes of the authors'
detectors as mmdet 2.26 builds them from DAT-Detection's configs (in full for the three
DAT++-T models, as a fingerprint for each of the 12 published configs).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tests.helpers import REPO_ROOT

OFFICIAL = json.loads((Path(__file__).parent / 'data' / 'dat_detection_official_keys.json')
                      .read_text())
CONFIG_DIR = REPO_ROOT / 'configs' / 'dat'
T_MODELS = list(OFFICIAL['tensors'])  # RetinaNet, Mask R-CNN, Cascade Mask R-CNN, DAT++-T
COCO_CLASSES = tuple(f'class_{i}' for i in range(80))


def build_detector(config_name: str) -> torch.nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(CONFIG_DIR / config_name))
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model)


def official_checkpoint(name: str, seed: int = 0) -> dict:
    """An mmdet 2.x checkpoint of DAT-Detection's model ``name``: every tensor random (float
    tensors ~N(0, 1), so no two share a value pattern; BN step counters distinct integers)."""
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for i, (key, shape) in enumerate(OFFICIAL['tensors'][name].items()):
        if key.endswith('num_batches_tracked'):
            state_dict[key] = torch.tensor(1000 + i)
        else:
            state_dict[key] = torch.randn(shape, generator=gen)
    return dict(meta=dict(CLASSES=COCO_CLASSES, mmdet_version='2.26.0'), state_dict=state_dict)


def fingerprint(model: torch.nn.Module) -> dict:
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    text = '\n'.join(f"{k} {','.join(map(str, state[k]))}" for k in sorted(state))
    return dict(num_tensors=len(state),
                num_elements=sum(v.numel() for v in model.state_dict().values()),
                sha256=hashlib.sha256(text.encode()).hexdigest())
