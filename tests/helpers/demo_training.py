"""The FCOS demo config pointed at the tiny shapes set with a short schedule, and the reading
and comparison of the checkpoints its training runs write."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import REPO_ROOT

FCOS_DEMO_CONFIG = str(REPO_ROOT / 'configs' / 'demo' / 'fcos_r18-half_shapes.py')


def data_options(root: Path) -> list[str]:
    """--cfg-options that point the demo config at ``root`` with a tiny schedule."""
    opts = ['train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'default_hooks.logger.interval=1', 'randomness.seed=0',
            'randomness.deterministic=True']
    for split in ('val', 'test'):
        opts.append(f'{split}_evaluator.ann_file={root}/annotations/instances_val.json')
    for split, folder in (('train', 'train'), ('val', 'val'), ('test', 'val')):
        opts += [f'{split}_dataloader.dataset.data_root={root}/',
                 f'{split}_dataloader.dataset.ann_file=annotations/instances_{folder}.json',
                 f'{split}_dataloader.dataset.data_prefix.img={folder}/']
    return opts


def load_checkpoint(path: Path) -> dict:
    """A checkpoint file of a training run, read as the trainer wrote it."""
    from dat_det.utils.checkpoint_files import mmengine_checkpoint_globals
    with mmengine_checkpoint_globals():
        return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_tensors(a, b, what: str) -> None:
    """``a`` and ``b`` (tensors, or dicts and sequences of them) are equal; ``what`` names the
    first difference."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            assert_same_tensors(a[k], b[k], f'{what}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f'{what}[{i}]')
    else:
        assert a == b, what
