"""ONNX export of Deformable DETR and a DAT backbone: onnxruntime matches PyTorch at two sizes."""
from __future__ import annotations

import re

import pytest
from torch import nn

pytest.importorskip('mmdet')
pytest.importorskip('onnxruntime')

from tests.helpers.tiny_configs import TINY_DAT, random_checkpoint, tiny_ddetr_config  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402


@pytest.fixture(scope='module')
def tiny_refine_model(tmp_path_factory, tiny_shapes_root):
    root = tmp_path_factory.mktemp('onnx')
    config = tiny_ddetr_config(root, tiny_shapes_root, with_box_refine=True)
    return config, random_checkpoint(config, root / 'tiny.pth')


def max_diffs(stdout: str) -> list:
    return [float(x) for x in re.findall(r' (\d\.\d+e[-+]\d+)', stdout)]


def test_deformable_detr_matches_pytorch_at_two_sizes(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    out = tmp_path / 'ddetr.onnx'
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                    str(out), '--shape', '128', '160', '--check-shape', '144', '208',
                    '--atol', '1e-4')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert out.is_file()
    assert 'at (128, 160)' in proc.stdout and 'at (144, 208)' in proc.stdout
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 4 and max(diffs) < 1e-4, proc.stdout

    import onnx
    model = onnx.load(str(out))
    assert {n.op_type for n in model.graph.node} >= {'GridSample'}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ['height', 'width']


def test_two_stage_deformable_detr_matches_pytorch(tmp_path, tiny_shapes_root):
    config = tiny_ddetr_config(tmp_path, tiny_shapes_root, with_box_refine=True,
                               as_two_stage=True)
    checkpoint = random_checkpoint(config, tmp_path / 'tiny_twostage.pth')
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--out',
                    str(tmp_path / 'twostage.onnx'), '--shape', '128', '160',
                    '--check-shape', '160', '128', '--atol', '1e-4')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 4 and max(diffs) < 1e-4, proc.stdout


def test_dat_backbone_matches_pytorch(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--part',
                    'backbone', '--out', str(tmp_path / 'dat.onnx'), '--shape', '128', '128',
                    '--check-shape', '160', '192')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    diffs = max_diffs(proc.stdout)
    assert len(diffs) == 6 and max(diffs) < 1e-4, proc.stdout


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_refine_model):
    config, checkpoint = tiny_refine_model
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(tmp_path / 'nope.pth'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'error: checkpoint not found: ' \
                                                   f'{tmp_path}/nope.pth'
    proc = run_tool('deployment/pytorch2onnx.py', str(config), str(checkpoint), '--opset', '13')
    assert proc.returncode == 2 and 'GridSample' in proc.stderr.strip().splitlines()[-1]


def _export_and_run(module, example, others, tmp_path, input_names, dynamic):
    """Export ``module(*example)`` (nothing swapped), run the graph with onnxruntime on each
    input tuple of ``others`` and return ``(onnxruntime outputs, PyTorch outputs)`` pairs."""
    import warnings

    import onnxruntime as ort
    import torch

    path = str(tmp_path / 'part.onnx')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, example, path, dynamo=False, opset_version=17,
                          input_names=input_names, dynamic_axes=dynamic)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    pairs = []
    for inputs in others:
        feed = {name: t.numpy() for name, t in zip(input_names, inputs)}
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected, )
        pairs.append((session.run(None, feed), [e.numpy() for e in expected]))
    return pairs


class FirstOutput(nn.Module):
    """``module(x)[0]``: a DAT attention block's ``(B, C, H, W)`` output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)[0]


def test_neighborhood_attention_export_path_runs_at_every_size(tmp_path):
    """The module's declared export path (index_select windows) gives a graph equal to PyTorch
    at sizes other than the traced one, for its default (tiled) backend; the unfold reference
    or the tile plan would freeze the traced size, and so would a Python branch on padding."""
    import numpy as np
    import torch

    from dat_det.models.layers.dat import NeighborhoodAttention2D

    torch.manual_seed(0)
    attn = NeighborhoodAttention2D(16, 5, 2, rel_pos_bias=True, use_natten=False).eval()
    assert attn.backend == 'tiled'
    with torch.no_grad():
        attn.rpb.normal_(0, 1.0)  # a bias that matters
    # traced above the kernel; checked at maps the module pads to the kernel too
    sizes = [(9, 11), (13, 8), (5, 6), (3, 7), (2, 2)]
    images = [(torch.randn(1, 16, h, w), ) for h, w in sizes]
    pairs = _export_and_run(FirstOutput(attn), images[0], images[1:], tmp_path, ['x'],
                            {'x': {2: 'h', 3: 'w'}})
    for (actual, ), (expected, ) in pairs:
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_gather_backend_equals_reference():
    import torch

    from dat_det.models.layers.dat import NeighborhoodAttention2D

    torch.manual_seed(0)
    gather = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, backend='gather')
    ref = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, backend='reference')
    ref.load_state_dict(gather.state_dict())
    x = torch.randn(2, 16, 10, 9, requires_grad=True)
    outs, grads = [], []
    for m in (gather, ref):
        y = m(x)[0]
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *m.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(*grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


def test_dat_pp_backbone_uses_its_neighbourhood_bias_in_onnx(tmp_path):
    """A DAT++ backbone whose N blocks carry a large ``rpb`` exports with it: onnxruntime
    equals PyTorch at other image sizes (stage maps smaller than the 7x7 kernel included),
    and the same model with the bias zeroed is clearly different, so the graph holds it."""
    import numpy as np
    import torch
    from mmdet.registry import MODELS

    import dat_det.models  # noqa: F401

    torch.manual_seed(0)
    model = MODELS.build(dict(TINY_DAT))
    model.eval()
    biases = [p for name, p in model.named_parameters() if name.endswith('.rpb')]
    assert len(biases) == 3
    with torch.no_grad():
        for p in biases:
            p.normal_(0, 1.0)
    images = [(torch.randn(1, 3, h, w), ) for h, w in [(96, 96), (112, 144), (64, 80)]]
    pairs = _export_and_run(model, images[0], images[1:], tmp_path, ['image'],
                            {'image': {2: 'h', 3: 'w'}})
    for actual, expected in pairs:
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for p in biases:
            p.zero_()
        unbiased = model(*images[1])
    assert max(np.abs(a - u.numpy()).max() for a, u in zip(pairs[0][0], unbiased)) > 1e-2


def test_two_stage_proposals_export_path_follows_the_image_size(tmp_path):
    """encoder_proposals traced with a spatial_shapes tensor of traced feature sizes: the
    graph gives the eager proposals at other sizes (``.tolist()`` would freeze them)."""
    import numpy as np
    import torch

    from dat_det.models.layers.deformable_detr import encoder_proposals

    class Proposals(torch.nn.Module):
        def forward(self, *feats):
            shapes = torch.stack([torch._shape_as_tensor(f)[-2:] for f in feats])
            memory = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
            return encoder_proposals(memory, None, shapes)[:2]

    module = Proposals()
    sizes = [((12, 10), (6, 5)), ((8, 14), (4, 7)), ((20, 16), (10, 8))]
    feats = [tuple(torch.randn(1, 4, h, w) for h, w in pair) for pair in sizes]
    pairs = _export_and_run(module, feats[0], feats[1:], tmp_path, ['f0', 'f1'],
                            {'f0': {2: 'h0', 3: 'w0'}, 'f1': {2: 'h1', 3: 'w1'}})
    for inputs, (actual, expected) in zip(feats[1:], pairs):
        shapes = [tuple(f.shape[-2:]) for f in inputs]
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in inputs], 1)
        eager = encoder_proposals(memory, None, shapes)  # Python-int sizes: the eager path
        for a, e, ref in zip(actual, expected, eager[:2]):
            np.testing.assert_array_equal(e, ref.numpy())
            assert a.shape == e.shape
            finite = np.isfinite(e)
            assert (np.isfinite(a) == finite).all()
            np.testing.assert_allclose(a[finite], e[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch', ['dat-t', 'dat++-t'])
def test_dat_backbone_graph_holds_at_sizes_that_need_padding(tmp_path, arch):
    """Exported at a size that needs no padding anywhere, the graph equals PyTorch at sizes
    whose stem, down-sampling, windows (v1's L/S blocks, shift masks included) or
    neighbourhood kernel need padding: every padding decision is traced, none frozen."""
    import numpy as np
    import torch
    from mmdet.registry import MODELS

    import dat_det.models  # noqa: F401
    from dat_det.testing.weights import randomize_parameters

    if arch == 'dat-t':
        cfg = dict(type='DAT', arch='dat-t', dim_stem=16, dims=[16, 32, 64, 128],
                   heads=[1, 2, 4, 8], groups=[-1, -1, 2, 4], depths=[2, 2, 2, 2],
                   stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'], ['L', 'D']],
                   window_sizes=[4, 4, 4, 4], drop_path_rate=0.0, init_cfg=None)
    else:
        cfg = dict(TINY_DAT, out_indices=(0, 1, 2, 3))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.eval()
    randomize_parameters(model, scale=0.1)
    images = [(torch.randn(1, 3, h, w), ) for h, w in [(128, 128), (100, 76), (148, 92)]]
    pairs = _export_and_run(model, images[0], images[1:], tmp_path, ['image'],
                            {'image': {2: 'h', 3: 'w'}})
    for actual, expected in pairs:
        for a, e in zip(actual, expected):
            assert a.shape == e.shape
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
