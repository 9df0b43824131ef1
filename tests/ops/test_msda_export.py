"""ONNX export of the op alone: the traced reference runs at batch sizes, query counts and
level sizes other than the traced ones and equals mmcv's PyTorch reference there."""
import warnings

import pytest
import torch
from torch import Tensor, nn

from dat_det.ops import multi_scale_deformable_attn
from tests.helpers.msda_inputs import level_tensors, mmcv_reference

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('mmcv.ops.multi_scale_deform_attn')

HEADS, CHANNELS, POINTS = 2, 4, 3


class AttentionOverMaps(nn.Module):
    """Two ``(B, heads * C, H_l, W_l)`` maps, level sizes read from their traced shapes."""

    def forward(self, map0: Tensor, map1: Tensor, locations: Tensor,
                weights: Tensor) -> Tensor:
        maps = (map0, map1)
        shapes = torch.stack([torch._shape_as_tensor(m)[-2:] for m in maps])
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        value = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        value = value.unflatten(-1, (HEADS, CHANNELS))
        return multi_scale_deformable_attn(value, shapes, starts, locations, weights)


def _inputs(batch, sizes, queries, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, HEADS * CHANNELS, h, w, generator=gen) for h, w in sizes]
    # a margin outside [0, 1]: taps on and beyond the borders
    locations = torch.rand(batch, queries, HEADS, 2, POINTS, 2, generator=gen) * 1.4 - 0.2
    weights = torch.rand(batch, queries, HEADS, 2, POINTS, generator=gen)
    return (*maps, locations, weights)


def test_export_at_opset_16_follows_level_sizes(tmp_path):
    module = AttentionOverMaps()
    path = str(tmp_path / 'msda.onnx')
    names = ['map0', 'map1', 'locations', 'weights']
    dynamic = {'map0': {0: 'b', 2: 'h0', 3: 'w0'}, 'map1': {0: 'b', 2: 'h1', 3: 'w1'},
               'locations': {0: 'b', 1: 'q'}, 'weights': {0: 'b', 1: 'q'},
               'out': {0: 'b', 1: 'q'}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # traced with batch 2: a traced size of 1 could be taken for a broadcast
        torch.onnx.export(module, _inputs(2, ((6, 8), (3, 4)), 5, seed=0), path,
                          dynamo=False, opset_version=16, input_names=names,
                          output_names=['out'], dynamic_axes=dynamic)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for batch, sizes, queries in ((2, ((6, 8), (3, 4)), 5), (1, ((9, 5), (4, 7)), 11),
                                  (3, ((1, 1), (2, 3)), 1)):
        inputs = _inputs(batch, sizes, queries, seed=queries)
        (actual, ) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        spatial_shapes, _, _ = level_tensors(sizes)
        value = torch.cat([m.flatten(2).transpose(1, 2) for m in inputs[:2]], 1)
        expected = mmcv_reference(value.unflatten(-1, (HEADS, CHANNELS)), spatial_shapes, None,
                                  inputs[2], inputs[3])
        torch.testing.assert_close(torch.from_numpy(actual), expected, atol=1e-5, rtol=1e-5)
