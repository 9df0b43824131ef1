"""The tools work for DINO as for Deformable DETR: sampling pictures (tool and training hook),
FLOPs with the op counted, ONNX export checked with onnxruntime, benchmark against mmdet."""
from __future__ import annotations

import re

import pytest

pytest.importorskip('mmdet')

from tests.helpers.tiny_configs import (  # noqa: E402
    random_checkpoint,
    tiny_ddetr_config,
    tiny_dino_model,
)
from tests.helpers.tool_runs import run_tool  # noqa: E402


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
    stdout = _ok(run_tool('analysis_tools/visualize_deformable.py', str(config), str(checkpoint),
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
    before_selection = [float(x) for x in re.findall(
        r'max \|ours - mmdet\| over (?:the encoder output|the scores and boxes of the encoder '
        r'proposals \(before the top-k query selection\)): (\S+)', stdout)]
    assert len(before_selection) == 2 and max(before_selection) < 1e-3, stdout
    detections = re.search(r'max \|ours - mmdet\| over scores and boxes: (\S+)', stdout)
    assert (float(detections[1]) < 1e-3 if detections
            else 'detections not compared: ' in stdout), stdout
    assert re.search(r'speed-up of ours over mmdet, train: [\d.]+x', stdout)


def test_dino_comparison_is_made_before_the_query_selection():
    """Detections are compared only when both DINOs start their decoders from the same
    proposals; the encoder and the proposal scores are compared always."""
    import copy

    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import dat_det.models  # noqa: F401
    from dat_det.analysis.detector_comparison import compare_detectors
    from dat_det.analysis.inputs import random_batch
    from dat_det.models.checkpoint import to_mmdet

    register_all_modules()
    torch.manual_seed(0)
    config = tiny_dino_model(256)
    ours = MODELS.build(copy.deepcopy(config))  # building writes into bbox_head's config
    ours.init_weights()
    theirs = MODELS.build(dict(copy.deepcopy(config), type='DINO'))
    theirs.load_state_dict(to_mmdet(ours.state_dict()), strict=True)
    ours.eval()
    theirs.eval()
    batch = random_batch((96, 128), num_classes=5)

    same = compare_detectors(ours, theirs, batch)
    assert same.memory < 1e-4 and same.proposals < 1e-4 and same.queries == 20
    if same.differing_queries == 0:
        assert same.detections < 1e-3
    else:  # near-tied random scores ranked apart by rounding: then nothing to compare
        assert same.detections is None

    # another ranking of the proposals: other queries, detections not compared
    scorer = theirs.bbox_head.cls_branches[theirs.decoder.num_layers]
    with torch.no_grad():
        scorer.weight.add_(torch.randn(scorer.weight.shape) * scorer.weight.std())
    moved = compare_detectors(ours, theirs, batch)
    assert moved.memory < 1e-4 and moved.proposals > 1e-2
    assert moved.differing_queries > 0 and moved.detections is None
    assert moved.summary()[-1].startswith(
        f'detections not compared: {moved.differing_queries} of the 20 decoder queries')
