"""torch.compile: the attention modules, Deformable DETR and DAT trace as whole graphs
(``fullgraph=True``, so any graph break fails) and give the eager results.

Most checks use the ``aot_eager`` backend: it runs everything the compiler front end does
(Dynamo, the op's fake implementation and registered autograd formula, AOT autograd) without
code generation, which keeps CI time low; one test goes through Inductor.
"""
import copy

import pytest
import torch
from torch import nn

from dat_det.models.layers.deformable_detr import (
    DeformableDecoder,
    DeformableEncoder,
    MSDeformAttn,
    level_start_index,
)

SIZES = [(6, 5), (3, 3)]
EMBED = 32
ATTN = dict(embed_dims=EMBED, num_heads=4, num_levels=2, num_points=2)
FFN = dict(embed_dims=EMBED, feedforward_channels=64, ffn_drop=0.0)


def _perturbed(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` with weights moved off their init (zero-initialised offsets count)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def _flatten(out) -> torch.Tensor:
    """All tensors of a (nested) tuple/list output as one vector."""
    if isinstance(out, torch.Tensor):
        return out.flatten()
    return torch.cat([_flatten(o) for o in out])


def _outputs_and_grads(fn, module: nn.Module, *inputs: torch.Tensor):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    module.zero_grad()
    flat = _flatten(fn(*inputs))
    (flat * torch.linspace(-1, 1, flat.numel())).sum().backward()
    grads = [x.grad for x in inputs] + [p.grad for p in module.parameters()
                                        if p.grad is not None]
    return flat.detach(), grads


def _assert_compiled_equals_eager(module, call, *inputs, backend='aot_eager'):
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    expected, expected_grads = _outputs_and_grads(lambda *x: call(module, *x), module, *inputs)
    actual, grads = _outputs_and_grads(lambda *x: call(compiled, *x), module, *inputs)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert len(grads) == len(expected_grads)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=1e-4)


def test_msda_module_with_inductor():
    """Inductor code generation around the registered op, forward and backward."""
    torch.manual_seed(0)
    attn = _perturbed(MSDeformAttn(**ATTN))
    starts = level_start_index(SIZES)
    num_values = sum(h * w for h, w in SIZES)
    _assert_compiled_equals_eager(
        attn, lambda m, q, v, r: m(q, v, r, SIZES, starts),
        torch.randn(2, 7, EMBED), torch.randn(2, num_values, EMBED), torch.rand(2, 7, 2, 2),
        backend='inductor')


@pytest.mark.parametrize('box_references', [False, True], ids=['points', 'boxes-refined'])
def test_encoder_and_decoder_are_one_graph(box_references):
    torch.manual_seed(0)
    layer_cfg = dict(self_attn_cfg=ATTN, ffn_cfg=FFN)
    encoder = _perturbed(DeformableEncoder(2, layer_cfg)).eval()
    decoder = _perturbed(DeformableDecoder(2, dict(
        self_attn_cfg=dict(embed_dims=EMBED, num_heads=4), cross_attn_cfg=ATTN,
        ffn_cfg=FFN))).eval()
    regressors = nn.ModuleList(nn.Linear(EMBED, 4) for _ in range(2))
    starts = level_start_index(SIZES)
    num_values = sum(h * w for h, w in SIZES)
    ratios = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.8, 0.9], [0.75, 1.0]]])

    _assert_compiled_equals_eager(
        encoder, lambda m, x, pos: m(x, pos, SIZES, starts, ratios),
        torch.randn(2, num_values, EMBED), torch.randn(2, num_values, EMBED))

    references = torch.rand(2, 5, 4 if box_references else 2)
    branches = regressors if box_references else None
    _assert_compiled_equals_eager(
        decoder,
        lambda m, q, pos, mem: m(q, pos, mem, references, SIZES, starts, ratios,
                                 reg_branches=branches),
        torch.randn(2, 5, EMBED), torch.randn(2, 5, EMBED), torch.randn(2, num_values, EMBED))


mmdet = pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402

from tests.helpers.detr_builders import VARIANTS, make_batch, tiny_detr_cfg  # noqa: E402


def _tiny_detector(variant: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(tiny_detr_cfg(**VARIANTS[variant]))
    model.init_weights()
    return _perturbed(model)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_detector_inference_is_one_graph(variant):
    """Backbone to head outputs (tensor mode, padded batch) in one graph, eager results."""
    model = _tiny_detector(variant).eval()
    inputs, samples = make_batch()
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        expected = model(inputs, copy.deepcopy(samples), mode='tensor')
        actual = compiled(inputs, copy.deepcopy(samples), mode='tensor')
    for a, e in zip(actual, expected):
        torch.testing.assert_close(torch.stack(list(a)), torch.stack(list(e)), atol=1e-4,
                                   rtol=1e-4)


def test_detector_training_step():
    """Loss and gradients of a compiled two-stage detector with box refinement equal eager
    ones (the Hungarian matcher runs on scipy: graph breaks there are expected)."""
    model = _tiny_detector('refine-two-stage').train()
    inputs, samples = make_batch()
    compiled = torch.compile(model, backend='aot_eager')
    results = []
    for fn in (model, compiled):
        model.zero_grad()
        losses = fn(inputs, copy.deepcopy(samples), mode='loss')
        sum(losses.values()).backward()
        results.append((losses, {k: p.grad.clone() for k, p in model.named_parameters()
                                 if p.grad is not None}))
    (expected, expected_grads), (actual, grads) = results
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-4, rtol=1e-4, msg=key)
    assert grads.keys() == expected_grads.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], expected_grads[key], atol=1e-4, rtol=1e-3,
                                   msg=key)


@pytest.mark.parametrize('arch', ['dat-t', 'dat++-t'])
def test_dat_backbone_is_one_graph(arch):
    """DAT / DAT++ forward and backward in one graph, eager results."""
    from tests.helpers.dat_builders import build_dat
    torch.manual_seed(0)
    backbone = _perturbed(build_dat(arch)).train()
    _assert_compiled_equals_eager(backbone, lambda m, x: tuple(m(x)),
                                  torch.randn(1, 3, 64, 64))
