"""Tools on detectors with DAttention blocks: ONNX export (onnxruntime equals PyTorch at two
sizes), pictures of the blocks' deformed keys, the cost benchmark."""
from __future__ import annotations

import json
import re

import pytest
import torch

pytest.importorskip('mmdet')

from tests.helpers import REPO_ROOT  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402

PLUGGED = REPO_ROOT / 'configs' / 'dattention' / 'rtmdet_tiny_dattention-spp_8xb32-300e_coco.py'


@pytest.fixture(scope='module')
def plugged_rtmdet(tmp_path_factory):
    """RTMDet-tiny with DAttention before the SPP block and before the head on level 0,
    weights moved off their init (blocks included), saved as a checkpoint."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from dat_det.testing.weights import randomize_parameters

    root = tmp_path_factory.mktemp('dattention')
    config = root / 'rtmdet_tiny_dattention.py'
    config.write_text(f"""
_base_ = '{PLUGGED}'
model = dict(model=dict(backbone=dict(init_cfg=None)),
             insert=[dict(before='backbone.stage4.1'), dict(after='neck', index=0)])
""")
    register_all_modules()
    model = MODELS.build(Config.fromfile(str(config)).model)
    randomize_parameters(model, seed=0, scale=0.1)
    checkpoint = root / 'rtmdet_tiny_dattention.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return config, checkpoint


def test_onnx_export_of_plugged_rtmdet_matches_pytorch(tmp_path, plugged_rtmdet):
    config, checkpoint = plugged_rtmdet
    out = tmp_path / 'rtmdet_dattention.onnx'
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                    str(out), '--shape', '128', '160', '--check-shape', '160', '224',
                    '--atol', '1e-4')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if 'onnxruntime vs PyTorch' in line]
    assert len(lines) == 2 and '(128, 160)' in lines[0] and '(160, 224)' in lines[1]
    for line in lines:  # class scores and box regressions of three levels
        diffs = [float(x) for x in re.findall(r' (\d\.\d+e[-+]\d+)', line)]
        assert len(diffs) == 6 and max(diffs) < 1e-4, line

    import onnx
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {'GridSample', 'Softmax'} <= ops  # deformable keys and the bias table, attention
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ['height', 'width']


def test_recorded_positions_are_those_the_block_used_and_blocks_are_chosen_by_site(plugged_rtmdet):
    from dat_det.apis import init_detector
    from dat_det.visualization import dattention_positions

    config, checkpoint = plugged_rtmdet
    model = init_detector(str(config), str(checkpoint), device='cpu')
    from dat_det.analysis.inputs import random_batch
    from dat_det.apis import preprocess
    inputs, samples = preprocess(model, random_batch((96, 128), seed=3))
    block = model.dattention['backbone_stage4_1__input']
    seen = []
    handle = block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        found = {p.name: p for p in dattention_positions(model, inputs, samples)}
    finally:
        handle.remove()
    assert set(found) == {'dattention.backbone_stage4_1__input', 'dattention.neck__out0'}
    record = found['dattention.backbone_stage4_1__input']
    x = seen[0]
    assert record.map_size == tuple(x.shape[-2:]) == (3, 4)
    with torch.no_grad():
        pos, ref = block.attn.sampling_positions(block.attn.proj_q(block.norm(x)))
    torch.testing.assert_close(record.pos, pos, rtol=0, atol=0)
    torch.testing.assert_close(record.ref, ref.expand_as(pos), rtol=0, atol=0)
    assert record.pos.shape[0] == block.attn.n_groups

    from dat_det.visualization import dattention_pictures
    image = torch.zeros(96, 128, 3, dtype=torch.uint8).numpy()
    (picture, ) = dattention_pictures(model, inputs, samples, image, 'after neck[0]')
    assert picture.name == 'dattention_neck__out0' and len(picture.points) > 0
    with pytest.raises(ValueError, match="no DAttention block 'before neck'; the model has: "
                                         'dattention.backbone_stage4_1__input, '
                                         'dattention.neck__out0'):
        dattention_pictures(model, inputs, samples, image, 'before neck')


def test_visualize_tool_draws_every_block(tmp_path, plugged_rtmdet, tiny_shapes_root):
    config, checkpoint = plugged_rtmdet
    image = tiny_shapes_root / 'val' / '000001.jpg'
    out = tmp_path / 'vis'
    proc = run_tool('analysis_tools/visualize_deformable.py', str(config), str(checkpoint),
                    str(image), '--out-dir', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob('*.png')) == [
        '000001_dattention_backbone_stage4_1__input.png', '000001_dattention_neck__out0.png']
    for line in proc.stdout.splitlines():
        if line.startswith('wrote '):
            assert int(line.split('(')[1].split()[0]) > 0, line  # keys inside the image


def test_cost_benchmark_reports_each_place(tmp_path):
    out = tmp_path / 'cost.json'
    proc = run_tool('analysis_tools/benchmark_dattention.py', '--models', 'rtmdet-tiny',
                    '--places', 'spp', 'head', '--img-size', '64', '96', '--iters', '1',
                    '--warmup', '0', '--json', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'input 1x3x64x96' in proc.stdout and 'threads' in proc.stdout
    rows = json.loads(out.read_text())
    assert [(r['place'], r['blocks']) for r in rows] == [('plain', 0), ('spp', 1), ('head', 3)]
    plain, spp, head = rows
    # before SPP: one block of 384 channels, four 1x1 projections of 384 x 384 and more
    assert spp['params'] - plain['params'] > 4 * 384 * 384
    for row in (spp, head):
        assert row['flops'] > plain['flops'] and row['flops_ratio'] > 1
        assert row['seconds'] > 0
    assert proc.stdout.count('| rtmdet-tiny |') == 3


@pytest.mark.slow
def test_shapes_comparison_trains_each_place_and_resumes(tmp_path, tiny_shapes_root):
    args = ['--places', 'none', 'head', '--seeds', '0', '--epochs', '1', '--data',
            str(tiny_shapes_root), '--work-dir', str(tmp_path / 'runs'), '--json',
            str(tmp_path / 'results.json')]
    proc = run_tool('analysis_tools/dattention_shapes_comparison.py', *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    assert [(r['place'], r['seed']) for r in results] == [('none', 0), ('head', 0)]
    assert all(0 <= r['coco/bbox_mAP'] <= 1 and r['wall_s'] > 0 for r in results)
    assert (tmp_path / 'runs' / 'head_seed0' / 'result.json').is_file()
    rows = [line for line in proc.stdout.splitlines() if line.startswith('| ')]
    assert [r.split('|')[1].strip() for r in rows[1:]] == ['none', 'head']
    # a second call reads the finished runs instead of training again
    again = run_tool('analysis_tools/dattention_shapes_comparison.py', *args)
    assert again.returncode == 0 and again.stdout == proc.stdout
