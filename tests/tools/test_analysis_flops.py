"""FLOP counters: hand-computed counts of our attention modules, and the get_flops tool."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.analysis import FlopAnalyzer  # noqa: E402

from dat_det.analysis import analyze_complexity, msda_flops, sdpa_flops  # noqa: E402
from dat_det.models.layers.dat.deformable_attention import DeformableAttention  # noqa: E402
from dat_det.models.layers.deformable_detr import MSDeformAttn  # noqa: E402
from tests.helpers import REPO_ROOT  # noqa: E402
from tests.helpers.tiny_configs import tiny_ddetr_config  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402

SHAPES = torch.tensor([[6, 8], [3, 4]])
STARTS = torch.tensor([0, 48])


class MSDABlock(torch.nn.Module):
    """Deformable attention on a fixed two-level layout."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.attn = MSDeformAttn(32, num_heads=4, num_levels=2, num_points=3,
                                                  backend=backend)

    def forward(self, query, value, reference_points):
        return self.attn(query, value, reference_points, SHAPES, STARTS)


def msda_inputs(queries: int = 10):
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(1, queries, 32, generator=gen), torch.randn(1, 60, 32, generator=gen),
            torch.rand(1, queries, 2, 2, generator=gen))


def test_formulas():
    assert msda_flops((2, 60, 4, 8), (2, 10, 4, 2, 3, 2)) == 5 * 2 * 10 * 4 * 8 * 2 * 3
    assert sdpa_flops((2, 4, 64, 8), (2, 4, 49, 8), (2, 4, 49, 16)) == 2 * 4 * 64 * 49 * 24


@pytest.mark.parametrize('backend', ['pytorch', 'cpu'])
def test_msda_module_matches_hand_count(backend):
    lq, s, c, heads, levels, points = 10, 60, 32, 4, 2, 3
    hand = (s * c * c                          # value_proj
            + lq * c * heads * levels * points * 2  # sampling_offsets
            + lq * c * heads * levels * points      # attention_weights
            + lq * c * c                        # output_proj
            + 5 * lq * c * levels * points)     # bilinear taps + weighting, all heads
    report = analyze_complexity(MSDABlock(backend).eval(), msda_inputs(lq))
    assert report.flops == hand
    assert report.by_operator['msda'] == 5 * lq * c * levels * points
    # mmengine alone misses the op (gather backend) or its weighting (grid_sample backend)
    plain = FlopAnalyzer(MSDABlock(backend).eval(), msda_inputs(lq))
    plain.unsupported_ops_warnings(False)
    assert plain.total() < hand


def test_dat_deformable_attention_matches_hand_count():
    c, heads, groups, h, w, k = 32, 4, 2, 8, 8, 3
    attn = DeformableAttention(c, heads, groups, (h, w), stride=1, offset_range_factor=2,
                               ksize=k).eval()
    hw = ns = h * w
    gc = c // groups
    hand = (4 * hw * c * c                     # proj_q, proj_k, proj_v, proj_out (1x1 convs)
            + groups * hw * gc * k * k         # depth-wise offset conv
            + 5 * groups * hw * gc             # its LayerNorm (mmengine: 5 per element)
            + groups * hw * gc * 2             # 1x1 conv to (dy, dx)
            + 4 * c * ns                       # bilinear key sampling
            + 4 * heads * hw * ns              # bilinear lookup of the position bias
            + hw * ns * 2 * c)                 # Q K^T and A V over all heads
    report = analyze_complexity(attn, (torch.randn(1, c, h, w), ))
    assert report.flops == hand
    assert report.by_operator['scaled_dot_product_attention'] == hw * ns * 2 * c


def test_detector_complexity_traces_the_whole_tensor_path():
    """Every deformable attention of the encoder (one query per position) and of the decoder
    (one per object query) is counted, and the detector itself is left as it was."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dat_det.analysis import detector_complexity
    from dat_det.analysis.inputs import random_image_batch
    from dat_det.apis import preprocess
    from tests.helpers.tiny_configs import tiny_ddetr_model

    register_all_modules()
    import dat_det.models  # noqa: F401
    model = MODELS.build(tiny_ddetr_model()).eval()
    inputs, samples = preprocess(model, random_image_batch(64, 80))
    with torch.no_grad():
        report = detector_complexity(model, inputs, samples)
    # levels of strides 8..64 on 64x80: 8x10, 4x5, 2x3, 1x2 = 108 positions
    heads, channels, levels, points, layers, queries = 4, 8, 4, 2, 2, 20
    per_query = 5 * heads * channels * levels * points
    assert report.by_operator['msda'] == per_query * layers * (108 + queries)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert 'forward' not in vars(model)


def test_get_flops_tool_counts_deformable_ops(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    proc = run_tool('analysis_tools/get_flops.py', str(config), '--shape', '64', '80',
                    '--show-table')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Input shape: (64, 80)' in proc.stdout
    assert 'Flops: ' in proc.stdout and 'Params: ' in proc.stdout
    by_op = next(line for line in proc.stdout.splitlines() if line.startswith('Flops by op'))
    assert ' msda ' in by_op and 'scaled_dot_product_attention' in by_op, by_op


def test_get_flops_tool_on_dataset_images(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root)
    proc = run_tool('analysis_tools/get_flops.py', str(config), '--num-images', '2')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Input shape: ' in proc.stdout


def test_get_flops_missing_config():
    proc = run_tool('analysis_tools/get_flops.py', str(REPO_ROOT / 'configs' / 'nope.py'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith('error: config file not found')
