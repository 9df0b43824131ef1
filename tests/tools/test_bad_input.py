"""Mistakes in data, configs and command lines end in one clear line and a non-zero exit."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.demo_training import FCOS_DEMO_CONFIG, data_options
from tests.helpers.tool_runs import run_tool


@pytest.fixture()
def broken_copy(tmp_path, tiny_shapes_root) -> Path:
    root = tmp_path / 'shapes'
    shutil.copytree(tiny_shapes_root, root)
    return root


def _break_missing_folder(root: Path) -> list[str]:
    shutil.rmtree(root)
    return []


def _break_annotation_not_json(root: Path) -> list[str]:
    (root / 'annotations' / 'instances_train.json').write_text('this is not json')
    return []


def _break_annotation_not_coco(root: Path) -> list[str]:
    (root / 'annotations' / 'instances_train.json').write_text('{"images": []}')
    return []


def _break_missing_image(root: Path) -> list[str]:
    (root / 'train' / '000003.jpg').unlink()
    return []


def _unknown_type(root: Path) -> list[str]:
    return ['model.backbone.type=NoSuchBackbone']


def _unknown_option(root: Path) -> list[str]:
    return ['train_cfg.max_epoch=3']


CASES = {
    'missing dataset folder': (_break_missing_folder, 'dataset folder not found'),
    'annotation not json': (_break_annotation_not_json, 'is not valid json'),
    'annotation not coco': (_break_annotation_not_coco, 'is not COCO format'),
    'image missing on disk': (_break_missing_image, 'not found: '),
    'unknown type': (_unknown_type, 'NoSuchBackbone is not in the'),
    'unknown cfg option': (_unknown_option, "no 'max_epoch' in train_cfg; did you mean "
                                            "'max_epochs'"),
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize('case', list(CASES))
def test_train_fails_in_one_line_and_keeps_checkpoints(case, tmp_path, broken_copy):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    earlier = work_dir / 'epoch_1.pth'
    earlier.write_bytes(b'an earlier checkpoint')
    (work_dir / 'last_checkpoint').write_text(str(earlier))
    before = _digest(earlier)

    breaker, expected = CASES[case]
    extra = breaker(broken_copy)
    proc = run_tool('train.py', FCOS_DEMO_CONFIG, '--work-dir', str(work_dir), '--cfg-options',
                    *data_options(broken_copy), *extra, timeout=300)

    assert proc.returncode == 2, proc.stderr[-3000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert error_lines and error_lines[-1].startswith('error: '), proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    assert expected in error_lines[-1], error_lines[-1]
    if case == 'image missing on disk':
        assert error_lines[-1].endswith('train/000003.jpg')
    assert _digest(earlier) == before
    assert [p.name for p in work_dir.rglob('*.pth')] == ['epoch_1.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(earlier)


def test_test_tool_missing_checkpoint(tmp_path, tiny_shapes_root):
    proc = run_tool('test.py', FCOS_DEMO_CONFIG, str(tmp_path / 'nope.pth'), '--cfg-options',
                    *data_options(tiny_shapes_root))
    assert proc.returncode == 2
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line == f'error: checkpoint not found: {tmp_path}/nope.pth'


def test_missing_config_file(tmp_path):
    proc = run_tool('train.py', str(REPO_ROOT / 'configs' / 'nope.py'))
    assert proc.returncode == 2
    assert 'config file not found' in proc.stderr.strip().splitlines()[-1]
