"""Truncated, corrupt or missing checkpoints and pretrained files end in one line naming the
file; ``--resume`` without a path falls back past a broken latest checkpoint."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import torch

from dat_det.engine.train_guards import check_pretrained_files
from dat_det.utils.checkpoint_files import CheckpointError, check_checkpoint, checkpoint_problem
from dat_det.utils.errors import UserInputError
from tests.helpers import REPO_ROOT
from tests.helpers.demo_training import FCOS_DEMO_CONFIG, data_options
from tests.helpers.forked_runs import run_forked


def train(work_dir: Path, root: Path, *extra: str, resume: str | None = None):
    args = ['--resume', resume] if resume is not None else []
    return run_forked('train.py', FCOS_DEMO_CONFIG, '--work-dir', str(work_dir), *args,
                      '--cfg-options', *data_options(root), *extra, log=Path(f'{work_dir}.log'))


def assert_ok(proc) -> None:
    assert proc.returncode == 0, proc.output[-4000:]


def _good(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({'state_dict': {'w': torch.randn(64, 64), 'b': torch.randn(64)},
                'meta': {'iter': 3}}, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_byte_in_tensor_data(path: Path) -> None:
    """Corrupt one byte inside the largest tensor record (the zip stays well-formed)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


BREAKERS = {
    'truncated': (truncate, 'truncated zip archive'),
    'flipped byte': (flip_byte_in_tensor_data, 'record .*/data/0 fails its CRC check'),
    'empty': (lambda p: p.write_bytes(b''), 'empty file'),
    'not a checkpoint': (lambda p: p.write_bytes(b'hello world, no pickle here'),
                         'not a PyTorch checkpoint'),
}


@pytest.mark.parametrize('case', list(BREAKERS))
def test_checkpoint_problem_names_what_is_wrong(tmp_path, case):
    path = _good(tmp_path / 'ckpt.pth')
    assert checkpoint_problem(str(path)) is None
    breaker, reason = BREAKERS[case]
    breaker(path)
    with pytest.raises(CheckpointError, match=re.escape(f'{path} is unreadable: ') + '.*' + reason):
        check_checkpoint(str(path))


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.output[-3000:]
    assert 'Traceback' not in proc.output, proc.output[-3000:]
    return [line for line in proc.output.splitlines() if line.strip()][-1]


def test_tools_refuse_broken_checkpoints_in_one_line(tmp_path, tiny_shapes_root):
    broken = _good(tmp_path / 'broken.pth')
    truncate(broken)
    line = _one_error_line(run_forked('test.py', FCOS_DEMO_CONFIG, str(broken), '--work-dir',
                                      str(tmp_path / 't'), '--cfg-options',
                                      *data_options(tiny_shapes_root), log=tmp_path / 't.log'))
    assert line.startswith(f'error: checkpoint {broken} is unreadable: truncated'), line
    line = _one_error_line(train(tmp_path / 'r', tiny_shapes_root, resume=str(broken)))
    assert line.startswith(f'error: --resume checkpoint {broken} is unreadable'), line
    line = _one_error_line(train(tmp_path / 'l', tiny_shapes_root, f'load_from={broken}'))
    assert line.startswith(f'error: load_from checkpoint {broken} is unreadable'), line


def test_resume_falls_back_past_a_broken_latest_checkpoint(tmp_path, tiny_shapes_root):
    work_dir = tmp_path / 'run'
    opts = ('train_dataloader.dataset.pipeline.3.prob=0.0', 'train_cfg.max_epochs=2',
            'default_hooks.checkpoint.interval=1')
    assert_ok(train(work_dir, tiny_shapes_root, *opts))
    truncate(work_dir / 'epoch_2.pth')
    proc = train(work_dir, tiny_shapes_root, *opts, resume='auto')
    assert_ok(proc)
    log = proc.output
    assert (f'warning: latest checkpoint {work_dir / "epoch_2.pth"} is unreadable (truncated '
            f'zip archive (no central directory)); resuming from {work_dir / "epoch_1.pth"} '
            'instead') in log, log[-3000:]
    assert 'resumed epoch: 1, iter: 4' in log
    assert checkpoint_problem(str(work_dir / 'epoch_2.pth')) is None  # rewritten, complete


def test_missing_pretrained_backbone_refused_before_anything_starts(tmp_path):
    config = REPO_ROOT / 'configs' / 'dat' / 'retinanet_dat++-t_fpn_amp-ms-crop-1x_coco.py'
    proc = run_forked('train.py', str(config), '--work-dir', str(tmp_path / 'w'),
                      log=tmp_path / 'w.log')
    line = _one_error_line(proc)
    assert line == ('error: pretrained weights not found: checkpoints/dat_pp_tiny_in1k_224.pth '
                    '(config key model.backbone.init_cfg.checkpoint); the official DAT / DAT++ '
                    'ImageNet weights are published at https://github.com/LeapLabTHU/DAT (file '
                    'names in configs/dat/README.md, "Pretrained backbones")'), line
    assert not (tmp_path / 'w').exists()  # refused before the runner made its work dir


def test_corrupt_pretrained_file_refused(tmp_path):
    weights = _good(tmp_path / 'dat_pp_tiny_in1k_224.pth')
    flip_byte_in_tensor_data(weights)
    cfg = dict(model=dict(backbone=dict(init_cfg=dict(type='Pretrained',
                                                      checkpoint=str(weights)))))
    with pytest.raises(UserInputError, match=r'pretrained weights \(model.backbone.init_cfg.'
                                             r'checkpoint\) .* fails its CRC check'):
        check_pretrained_files(cfg)


def test_the_checked_loader_is_installed_by_building_a_runner_not_by_an_import():
    """Importing dat_det.engine leaves mmengine's local checkpoint loader alone; the runner
    builder installs the checked one, through which a broken file fails in one line."""
    code = """
import sys
from mmengine.runner import CheckpointLoader
original = CheckpointLoader._schemes['']
import dat_det.engine, dat_det.models, dat_det.apis
assert CheckpointLoader._schemes[''] is original, 'replaced by an import'
from dat_det.engine.checkpoint_io import load_from_local, use_checked_checkpoint_loader
use_checked_checkpoint_loader()
assert CheckpointLoader._schemes[''] is load_from_local
try:
    CheckpointLoader.load_checkpoint(sys.argv[1])
except Exception as err:
    print(type(err).__name__, err)
"""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        broken = _good(Path(tmp) / 'broken.pth')
        truncate(broken)
        proc = subprocess.run([sys.executable, '-c', code, str(broken)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == (f'CheckpointError checkpoint {broken} is unreadable: '
                                           'truncated zip archive (no central directory)')
