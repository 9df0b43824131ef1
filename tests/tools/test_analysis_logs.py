"""analyze_logs.py (curves, iteration time) on mmengine json logs and browse_dataset.py."""
from __future__ import annotations

import json

import pytest

pytest.importorskip('mmdet')

from tests.helpers import REPO_ROOT  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402

CONFIG = str(REPO_ROOT / 'configs' / 'demo' / 'fcos_r18-half_shapes.py')


def write_log(path, times, loss0: float) -> None:
    """Two epochs of 3 iterations each, a validation after each epoch."""
    lines, step = [], 0
    for epoch in (1, 2):
        for _ in range(3):
            step += 1
            lines.append(dict(lr=1e-3 / step, loss=loss0 / step, loss_cls=0.5 / step,
                              time=times[step - 1], data_time=0.01, epoch=epoch, iter=step,
                              step=step))
        lines.append({'coco/bbox_mAP': 0.1 * epoch, 'data_time': 0.01, 'time': 0.2,
                      'step': epoch})
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')


def test_plot_curve_of_two_runs(tmp_path):
    a, b = tmp_path / 'a.json', tmp_path / 'b.json'
    write_log(a, [1.0] * 6, 2.0)
    write_log(b, [2.0] * 6, 3.0)
    out = tmp_path / 'curves.png'
    proc = run_tool('analysis_tools/analyze_logs.py', 'plot_curve', str(a), str(b), '--keys',
                    'loss', 'lr', 'coco/bbox_mAP', '--legend', 'A', 'B', '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and out.stat().st_size > 10_000


def test_curve_points():
    from dat_det.visualization.logs import RunLog, curve
    log = RunLog('x', train=[dict(loss=2.0, lr=0.1, step=5), dict(loss=1.0, lr=0.1, step=10)],
                 val=[{'coco/bbox_mAP': 0.3, 'step': 1}])
    assert curve(log, 'loss')[:2] == ([5, 10], [2.0, 1.0])
    assert curve(log, 'coco/bbox_mAP')[:2] == ([1], [0.3])


def test_mean_iteration_time(tmp_path):
    log = tmp_path / 'run.json'
    write_log(log, [9.0, 1.0, 2.0, 9.0, 3.0, 4.0], 2.0)  # first iteration of each epoch dropped
    proc = run_tool('analysis_tools/analyze_logs.py', 'cal_train_time', str(log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'mean iteration time: 2.5000 s' in proc.stdout
    assert 'slowest epoch 2, fastest epoch 1' in proc.stdout


def test_unknown_key_and_missing_log_are_one_line_errors(tmp_path):
    log = tmp_path / 'run.json'
    write_log(log, [1.0] * 6, 2.0)
    proc = run_tool('analysis_tools/analyze_logs.py', 'plot_curve', str(log), '--keys', 'mAP',
                    '--out', str(tmp_path / 'x.png'))
    assert proc.returncode == 2
    assert "error: key 'mAP' is in none of the logs" in proc.stderr.strip().splitlines()[-1]
    proc = run_tool('analysis_tools/analyze_logs.py', 'cal_train_time', str(tmp_path / 'no'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'error: log file not found: {tmp_path}/no'


def test_browse_dataset_writes_one_png_per_image(tmp_path, tiny_shapes_root):
    out = tmp_path / 'browse'
    proc = run_tool('analysis_tools/browse_dataset.py', CONFIG, '--output-dir', str(out),
                    '--cfg-options', f'train_dataloader.dataset.data_root={tiny_shapes_root}/')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob('*.png'))) == 8
    assert '8/8' in proc.stderr  # the progress bar


def test_browse_dataset_missing_data(tmp_path):
    proc = run_tool('analysis_tools/browse_dataset.py', CONFIG, '--cfg-options',
                    f'train_dataloader.dataset.data_root={tmp_path}/nope/')
    assert proc.returncode == 2
    assert 'dataset folder not found' in proc.stderr.strip().splitlines()[-1]


def test_browse_dataset_draws_instance_masks(tmp_path, tiny_shapes_root):
    """With masks loaded, the pictures differ from the boxes-only ones inside the objects."""
    import numpy as np
    from PIL import Image

    config = tmp_path / 'with_masks.py'
    config.write_text(f"""_base_ = '{CONFIG}'
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs')]))
""")
    data = f'train_dataloader.dataset.data_root={tiny_shapes_root}/'
    boxes_only = config.with_name('boxes_only.py')
    boxes_only.write_text(config.read_text().replace(', with_mask=True', ''))
    outputs = {}
    for name, cfg in (('masks', config), ('boxes', boxes_only)):
        outputs[name] = tmp_path / name
        proc = run_tool('analysis_tools/browse_dataset.py', str(cfg), '--output-dir',
                        str(outputs[name]), '--num', '2', '--cfg-options', data)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for png in sorted(outputs['boxes'].glob('*.png')):
        a = np.asarray(Image.open(png).convert('RGB'), dtype=np.int32)
        b = np.asarray(Image.open(outputs['masks'] / png.name).convert('RGB'), dtype=np.int32)
        assert a.shape == b.shape
        assert (np.abs(a - b).sum(-1) > 30).mean() > 0.01, png.name
