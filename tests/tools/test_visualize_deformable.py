"""Deformable attention pictures: exact recorded samples, pixel geometry, the tool and the hook."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from dat_det.models.layers.deformable_detr import MSDeformAttn  # noqa: E402
from dat_det.ops import multi_scale_deformable_attn  # noqa: E402
from dat_det.visualization import record_msda  # noqa: E402
from dat_det.visualization.geometry import dat_to_pixels, msda_to_pixels  # noqa: E402
from tests.helpers.tiny_configs import random_checkpoint, tiny_ddetr_config  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory, tiny_shapes_root):
    root = tmp_path_factory.mktemp('vis')
    config = tiny_ddetr_config(root, tiny_shapes_root)
    return config, random_checkpoint(config, root / 'tiny.pth')


def test_recorded_samples_are_those_the_op_used():
    torch.manual_seed(0)
    attn = MSDeformAttn(32, num_heads=4, num_levels=2, num_points=3).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    shapes, starts = torch.tensor([[6, 8], [3, 4]]), torch.tensor([0, 48])
    query, value = torch.randn(2, 10, 32), torch.randn(2, 60, 32)
    with torch.no_grad(), record_msda(attn) as records:
        out = attn(query, value, torch.rand(2, 10, 2, 2), shapes, starts)
    (call, ) = records['']
    assert call.locations.shape == (2, 10, 4, 2, 3, 2)
    assert torch.allclose(call.weights.sum((-1, -2)), torch.ones(2, 10, 4))
    with torch.no_grad():
        values = attn.value_proj(value).view(2, 60, 4, 8)
        again = attn.output_proj(multi_scale_deformable_attn(
            values, shapes, starts, call.locations, call.weights))
    torch.testing.assert_close(again, out)


def test_pixel_geometry():
    # (x, y) normalized over a 64x80 padded input, image resized by 2 in x and 4 in y
    xy = msda_to_pixels(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), (64, 80), (2.0, 4.0))
    np.testing.assert_allclose(xy, [[20.0, 8.0], [40.0, 0.0]])
    # (y, x) corner-aligned on a 4x5 stage map of stride 16: -1/1 are the first/last centres
    yx = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    xy = dat_to_pixels(yx, (4, 5), (64, 80), (1.0, 1.0))
    np.testing.assert_allclose(xy, [[8.0, 8.0], [72.0, 56.0]])


def test_tool_draws_dat_keys_and_ddetr_points(tmp_path, tiny_model, tiny_shapes_root):
    config, checkpoint = tiny_model
    image = tiny_shapes_root / 'val' / '000001.jpg'
    out = tmp_path / 'vis'
    proc = run_tool('analysis_tools/visualize_deformable.py', str(config), str(checkpoint),
                    str(image), '--out-dir', str(out), '--encoder-points', '30', '20',
                    '--top-k', '3')
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.glob('*.png'))
    assert names == ['000001_dat_stage3_block1.png', '000001_decoder.png',
                     '000001_encoder.png'], names
    wrote = [line for line in proc.stdout.splitlines() if line.startswith('wrote ')]
    assert len(wrote) == 3, proc.stdout
    for line in wrote:
        assert int(line.split('(')[1].split()[0]) > 0, line  # points landed inside the image


def test_pictures_plot_points_inside_the_image(tiny_model, tiny_shapes_root):
    import mmcv

    from dat_det.apis import init_detector, prepare_image
    from dat_det.visualization import deformable_pictures

    config, checkpoint = tiny_model
    path = str(tiny_shapes_root / 'val' / '000002.jpg')
    model = init_detector(str(config), str(checkpoint), device='cpu')
    inputs, samples = prepare_image(model, path)
    image = mmcv.imread(path, channel_order='rgb')
    pictures = deformable_pictures(model, inputs, samples, image, top_k=2,
                                   encoder_points=[(10.0, 12.0)])
    height, width = image.shape[:2]
    for picture in pictures:
        pts = picture.points
        assert len(pts) > 0, picture.name
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= width).all()
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= height).all()
    # at init every query samples a star around itself: its level-0 points straddle the anchor
    encoder = next(p for p in pictures if p.name == 'encoder')
    centre = encoder.points.mean(0)
    assert np.abs(centre - [10.0, 12.0]).max() < 0.5 * max(height, width)


def test_missing_image_is_a_one_line_error(tmp_path, tiny_model):
    config, checkpoint = tiny_model
    proc = run_tool('analysis_tools/visualize_deformable.py', str(config), str(checkpoint),
                    str(tmp_path / 'nope.jpg'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'error: image not found: {tmp_path}/nope.jpg'


def test_hook_writes_pictures_during_training(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    config.write_text(config.read_text().replace(
        "custom_imports = dict(imports=['dat_det.models']",
        "custom_imports = dict(imports=['dat_det.models', 'dat_det.engine']") +
        "custom_hooks = [dict(type='DeformableVisualizationHook', num_images=1, top_k=2)]\n")
    work_dir = tmp_path / 'work'
    proc = run_tool('train.py', str(config), '--work-dir', str(work_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(p.name for p in work_dir.glob('*/vis_data/vis_image/deformable_*.png'))
    assert written == ['deformable_000001_dat_stage3_block1_1.png',
                       'deformable_000001_decoder_1.png'], written


def test_recording_goes_through_the_declared_probe():
    """The recording is what leaves ``sampling_probe``, i.e. what the op receives: a probe
    that moves the locations moves the recording and the output alike. If the module stops
    calling its probe, the recording is empty and this test fails."""
    torch.manual_seed(0)
    attn = MSDeformAttn(32, num_heads=4, num_levels=2, num_points=3).eval()
    sizes = [(6, 8), (3, 4)]
    query, value, refs = torch.randn(1, 5, 32), torch.randn(1, 60, 32), torch.rand(1, 5, 2, 2)
    with torch.no_grad(), record_msda(attn) as records:
        attn(query, value, refs, sizes, None)
    (call, ) = records['']
    assert call.spatial_shapes.tolist() == [[6, 8], [3, 4]]

    class Shift(torch.nn.Module):
        def forward(self, locations, weights):
            return locations + 0.25, weights

    attn.sampling_probe = Shift()
    with torch.no_grad(), record_msda(attn) as shifted:
        out = attn(query, value, refs, sizes, None)
    (moved, ) = shifted['']
    torch.testing.assert_close(moved.locations, call.locations + 0.25)
    with torch.no_grad():
        values = attn.value_proj(value).view(1, 60, 4, 8)
        again = attn.output_proj(multi_scale_deformable_attn(
            values, sizes, None, moved.locations, moved.weights))
    torch.testing.assert_close(again, out)
