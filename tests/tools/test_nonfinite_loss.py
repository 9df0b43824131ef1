"""A NaN loss stops training in one line and keeps the last good checkpoint; with
``NonFiniteLossHook(action='skip')`` the batch is skipped, counted, and the weights stay finite."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.demo_training import FCOS_DEMO_CONFIG, data_options, load_checkpoint
from tests.helpers.forked_runs import run_forked


def nan_config(tmp: Path, iteration: int, action: str | None) -> Path:
    guard = f"dict(type='NonFiniteLossHook', action='{action}')," if action else ''
    path = tmp / f'nan_{action}.py'
    path.write_text(f"""
_base_ = ['{FCOS_DEMO_CONFIG}']
custom_imports = dict(imports=['tests.helpers.probe_hooks'], allow_failed_imports=False)
custom_hooks = [{guard} dict(type='NaNInjectHook', iteration={iteration}, term='loss_cls')]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
train_cfg = dict(max_epochs=2, val_interval=10)
""")
    return path


def train(config: Path, work_dir: Path, root: Path):
    return run_forked('train.py', str(config), '--work-dir', str(work_dir), '--cfg-options',
                      *data_options(root), log=work_dir.parent / f'{work_dir.name}.log')


def all_finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_nan_loss_stops_in_one_line_and_keeps_last_checkpoint(tmp_path, tiny_shapes_root):
    work_dir = tmp_path / 'stop'
    proc = train(nan_config(tmp_path, iteration=6, action=None), work_dir, tiny_shapes_root)
    assert proc.returncode == 3, proc.output[-3000:]
    last = [line for line in proc.output.splitlines() if line.strip()][-1]
    assert last.startswith('error: non-finite loss at iteration 6: loss_cls=nan'), last
    assert str(work_dir / 'epoch_1.pth') in last, last
    assert 'Traceback' not in proc.output
    assert not (work_dir / 'epoch_2.pth').exists()
    kept = load_checkpoint(work_dir / 'epoch_1.pth')
    assert kept['meta']['iter'] == 4 and all_finite(kept['state_dict'])


def test_nan_loss_batch_skipped_and_counted(tmp_path, tiny_shapes_root):
    work_dir = tmp_path / 'skip'
    proc = train(nan_config(tmp_path, iteration=2, action='skip'), work_dir, tiny_shapes_root)
    log = proc.output
    assert proc.returncode == 0, log[-3000:]
    assert ('iteration 2: non-finite loss (loss_cls=nan); batch skipped without changing the '
            'weights (1 skipped so far)') in log, log[-3000:]
    assert '1 batches with a non-finite loss were skipped' in log
    final = load_checkpoint(work_dir / 'epoch_2.pth')
    assert final['meta']['iter'] == 8
    assert all_finite(final['state_dict'])
    assert final['message_hub']['runtime_info']['nonfinite_skipped'] == 1
