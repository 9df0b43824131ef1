"""The tools work for DINO as for Deformable DETR: sampling pictures (tool and training hook),
FLOPs with the op counted, ONNX export checked with onnxruntime, benchmark against mmdet."""
from __future__ import annotations

import re

import pytest

pytest.importorskip('mmdet')

from tests.conftest import run_tool  # noqa: E402
from tests.tools.tiny_configs import (  # noqa: E402
    random_checkpoint,
    tiny_ddetr_config,
    tiny_dino_model,
)


@pytest.fixture(scope='module')
def tiny_dino(tmp_path_factory, tiny_shapes_root):
    root = tmp_path_factory.mktemp('dino')
    config = tiny_ddetr_config(root, tiny_shapes_root, model=tiny_dino_model(),
                               name='tiny_dino')
    return config, random_checkpoint(config, root / 'tiny_dino.pth')


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_visualize_tool_draws_dino_sampling(tmp_path, tiny_dino, tiny_shapes_root):
    config, checkpoint = tiny_dino
    out = tmp_path / 'vis'
    stdout = _ok(run_tool('visualize_deformable.py', str(config), str(checkpoint),
                          str(tiny_shapes_root / 'val' / '000001.jpg'), '--out-dir', str(out),
                          '--encoder-points', '30', '20', '--top-k', '3'))
    names = sorted(p.name for p in out.glob('*.png'))
    assert names == ['000001_dat_stage3_block1.png', '000001_decoder.png',
                     '000001_encoder.png'], names
    wrote = [line for line in stdout.splitlines() if line.startswith('wrote ')]
    assert len(wrote) == 3 and all(int(w.split('(')[1].split()[0]) > 0 for w in wrote), stdout


def test_dino_trains_with_the_visualization_hook(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, model=tiny_dino_model(),
                               name='tiny_dino_hook')
    config.write_text(config.read_text().replace(
        "custom_imports = dict(imports=['dat_det.models']",
        "custom_imports = dict(imports=['dat_det.models', 'dat_det.engine']") +
        "custom_hooks = [dict(type='DeformableVisualizationHook', num_images=1, top_k=2)]\n")
    work_dir = tmp_path / 'work'
    stdout = _ok(run_tool('train.py', str(config), '--work-dir', str(work_dir)))
    assert 'coco/bbox_mAP' in stdout
    written = sorted(p.name for p in work_dir.glob('*/vis_data/vis_image/deformable_*.png'))
    assert written == ['deformable_000001_dat_stage3_block1_1.png',
                       'deformable_000001_decoder_1.png'], written


def test_get_flops_counts_the_op_in_dino(tiny_dino):
    config, _ = tiny_dino
    stdout = _ok(run_tool('analysis_tools/get_flops.py', str(config), '--shape', '64', '80'))
    by_op = next(line for line in stdout.splitlines() if line.startswith('Flops by op'))
    assert ' msda ' in by_op and 'scaled_dot_product_attention' in by_op, by_op


def test_onnx_export_of_dino_matches_pytorch(tmp_path, tiny_dino):
    pytest.importorskip('onnxruntime')
    config, checkpoint = tiny_dino
    stdout = _ok(run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                          str(tmp_path / 'dino.onnx'), '--shape', '128', '160',
                          '--check-shape', '160', '128', '--atol', '1e-4'))
    diffs = [float(x) for x in re.findall(r' (\d\.\d+e[-+]\d+)', stdout)]
    assert 'at (128, 160)' in stdout and 'at (160, 128)' in stdout
    assert len(diffs) == 4 and max(diffs) < 1e-4, stdout


def test_benchmark_compares_dino_with_mmdet(tmp_path, tiny_shapes_root):
    # mmdet's DINO decoder encodes boxes with a fixed 128 features per coordinate: 256 dims
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, model=tiny_dino_model(256),
                               name='tiny_dino_256')
    stdout = _ok(run_tool('analysis_tools/benchmark.py', str(config), '--compare', '--train',
                          '--img-size', '96', '128', '--iters', '2', '--warmup', '1'))
    for name in ('MSDADINO', 'mmdet DINO'):
        assert re.search(rf'\[{name}\] inference: [\d.]+ ms/batch', stdout), stdout
        assert re.search(rf'\[{name}\] train iteration: [\d.]+ ms', stdout), stdout
    diff = float(re.search(r'max \|ours - mmdet\| over scores and boxes: (\S+)', stdout)[1])
    assert diff < 1e-3
    assert re.search(r'speed-up of ours over mmdet, train: [\d.]+x', stdout)
