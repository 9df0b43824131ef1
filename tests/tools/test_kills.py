"""tools/train.py killed (SIGKILL) at 10 points, each time resumed with --resume: it goes on from
the last recorded checkpoint, never finds a half-written one, and ends with the weights and
optimizer state of an uninterrupted run.

One chain of runs on the tiny shapes data (3 epochs of 4 iterations, validation of 4 batches
and a checkpoint after each epoch, max_keep_ckpts=1): every run but the last is killed at the
next point of ``KILLS``; see tests/helpers/kill_points.py for what each point means.
"""
from __future__ import annotations

import re
from pathlib import Path

from dat_det.utils.checkpoint_files import checkpoint_problem
from tests.helpers.demo_training import (
    FCOS_DEMO_CONFIG,
    assert_same_tensors,
    data_options,
    load_checkpoint,
)
from tests.helpers.forked_runs import run_forked

# (kill point, epoch/iteration the next run must resume from; None = from scratch).
# Mid-iteration: 2, during validation: 2, while a checkpoint is being written: 6.
KILLS = [
    ('step:2', None),                          # mid-iteration, before any checkpoint
    ('val:4:2', (1, 4)),                       # validation after epoch 1 (epoch_1 saved)
    ('before_save:8', (1, 4)),                 # checkpoint assembled, nothing written
    ('ckpt_mid:epoch_2.pth', (1, 4)),          # half the bytes of epoch_2.pth written
    ('ckpt_before_rename:epoch_2.pth', (1, 4)),
    ('ckpt_after_rename:epoch_2.pth', (1, 4)),  # last_checkpoint still names epoch_1
    ('pointer_mid:epoch_2.pth', (1, 4)),       # last_checkpoint half rewritten
    ('prune:epoch_1.pth', (2, 8)),             # epoch_2 recorded, epoch_1 not yet removed
    ('step:10', (2, 8)),                       # mid-iteration in epoch 3
    ('val:12:2', (3, 12)),                     # validation after the last epoch
]
LEAVES_TEMP_FILE = ('ckpt_mid', 'ckpt_before_rename', 'pointer_mid')


def kill_config(tmp: Path) -> Path:
    path = tmp / 'kill_config.py'
    path.write_text(f"""
_base_ = ['{FCOS_DEMO_CONFIG}']
custom_imports = dict(imports=['tests.helpers.kill_points'], allow_failed_imports=False)
custom_hooks = [dict(type='KillPointHook')]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                                     backend_args=dict(backend='killing_local')))
train_cfg = dict(max_epochs=3, val_interval=1)
""")
    return path


def train(config: Path, work_dir: Path, root: Path, log: Path, kill: str = '',
          resume: bool = False):
    return run_forked('train.py', str(config), '--work-dir', str(work_dir),
                      *(['--resume'] if resume else []), '--cfg-options', *data_options(root),
                      'train_dataloader.dataset.pipeline.3.prob=0.0',
                      'val_dataloader.batch_size=1', log=log,
                      env=dict(DAT_DET_TEST_KILL=kill))


def resumed_from(log: str):
    match = re.search(r'resumed epoch: (\d+), iter: (\d+)', log)
    return None if match is None else (int(match[1]), int(match[2]))


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, tiny_shapes_root):
    config = kill_config(tmp_path)
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    proc = train(config, straight, tiny_shapes_root, tmp_path / 'straight.log')
    assert proc.returncode == 0, proc.output[-3000:]

    expected_resume, temp_left = None, False
    for i, (point, resume_after) in enumerate(KILLS):
        proc = train(config, killed, tiny_shapes_root, tmp_path / f'kill{i}.log', kill=point,
                     resume=True)
        log = proc.output
        assert proc.returncode == -9, f'{point}: not killed\n{log[-3000:]}'
        assert f'KILLED AT {point}' in log, point
        assert resumed_from(log) == expected_resume, (point, log[-3000:])
        assert ('removing an incomplete write of a killed run' in log) == temp_left, point
        # Never a half-written checkpoint under a checkpoint's name.
        for ckpt in killed.glob('*.pth'):
            assert checkpoint_problem(str(ckpt)) is None, (point, ckpt)
        temp_left = point.startswith(LEAVES_TEMP_FILE)
        assert bool(list(killed.glob('.*.incomplete'))) == temp_left, point
        expected_resume = resume_after

    proc = train(config, killed, tiny_shapes_root, tmp_path / 'final.log', resume=True)
    assert proc.returncode == 0, proc.output[-3000:]
    assert resumed_from(proc.output) == expected_resume, proc.output[-3000:]

    a = load_checkpoint(straight / 'epoch_3.pth')
    b = load_checkpoint(killed / 'epoch_3.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 12
    assert_same_tensors(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
