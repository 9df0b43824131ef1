"""The DAttention plug-in block: DAT's layer with defaults from the channels, at any size.

Oracle: ``DeformableAttentionReference`` (``dat_det.testing.dat_reference``), deformable
attention written from its equations with loops over images, groups and heads; it samples the
bias table at normalised displacements too and so runs at any input size.
"""
from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import torch

from dat_det.models.layers import DAttention
from dat_det.models.layers.dat import DAT_ARCH_SETTINGS, DeformableAttention, TransformerStage
from dat_det.models.layers.dattention import resolve_options
from dat_det.testing.dat_reference import DETAILS, DeformableAttentionReference
from dat_det.testing.weights import copy_weights, randomize_parameters
from tests.helpers import REPO_ROOT

_randomize = partial(randomize_parameters, seed=3, scale=0.2)

POSITION_BIAS_FLAGS = {  # use_pe, dwc_pe, log_cpb of the reference (official flag names)
    'table': (True, False, False), 'log_cpb': (True, False, True),
    'dwc': (True, True, False), 'none': (False, False, False)}


def _reference_twin(block: DAttention) -> DeformableAttentionReference:
    """The reference with the block's configuration and weights."""
    attn = block.attn
    use_pe, dwc_pe, log_cpb = POSITION_BIAS_FLAGS[block.position_bias]
    reference = DeformableAttentionReference(
        attn.num_heads * attn.head_dim, attn.num_heads, attn.n_groups, (attn.q_h, attn.q_w),
        stride=attn.stride, offset_range_factor=attn.offset_range_factor, use_pe=use_pe,
        dwc_pe=dwc_pe, log_cpb=log_cpb, ksize=attn.ksize, details=DETAILS[attn.formulation])
    copy_weights(attn, reference)
    return reference


SIZES = [
    (64, (13, 9)),    # stride 8: a 2 x 2 key grid
    (96, (11, 7)),    # 3 heads, 1 group, stride 4: 3 x 2 keys
    (128, (9, 10)),   # 4 heads, 2 groups, stride 4
    (256, (5, 6)),    # 8 heads, 4 groups, stride 2: 3 x 3 keys
    (192, (4, 3)),    # 6 heads, 3 groups, stride 2: 2 x 2 keys
]
CASES = [(c, s, 'table') for c, s in SIZES] + [
    (c, s, bias) for c, s in SIZES[1::3] for bias in ('log_cpb', 'dwc', 'none')]


@pytest.mark.parametrize('channels,size,position_bias', CASES)
def test_block_matches_the_reference_at_any_size(channels, size, position_bias):
    block = DAttention(channels, position_bias=position_bias)
    _randomize(block)
    reference = _reference_twin(block)
    x = torch.randn(2, channels, *size)
    x_ours, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = block(x_ours)
    y_ref = x_ref + reference(block.norm(x_ref))[0]
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    # every parameter gets the reference gradient (float32 sums of large terms: the tolerance
    # scales with the gradient); all but proj_k.bias matter (a bias shared by all keys of a
    # query cancels in the softmax, its exact gradient is 0)
    ref_params = dict(reference.named_parameters())
    for name, p in block.attn.named_parameters():
        if name == 'proj_k.bias':
            assert p.grad.abs().max() < 1e-4
            continue
        expected = ref_params[name].grad
        torch.testing.assert_close(p.grad, expected, rtol=1e-4,
                                   atol=1e-6 * (1 + expected.abs().max().item()))
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('size', [(1, 1), (1, 5), (3, 1), (2, 2)])
def test_one_key_grid_attends_uniformly(size):
    """A map whose key grid is one cell (stride 8 from <= 8 px): the official formulation
    divides by zero there, ours puts the key at the centre. With one key, every query gets
    the same attention output (softmax over one key is 1), so the block adds the same vector
    at every position."""
    block = DAttention(64, pre_norm=False)
    _randomize(block)
    x = torch.randn(3, 64, *size, requires_grad=True)
    seen = []
    handle = block.attn.sampling_probe.register_forward_hook(
        lambda probe, args, out: seen.append(out[0]))
    y = block(x)
    handle.remove()
    grid = seen[0]
    assert tuple(grid.shape[1:3]) == (1, 1) and torch.isfinite(grid).all()
    delta = (y - x).flatten(2)
    torch.testing.assert_close(delta, delta[..., :1].expand_as(delta), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(delta[0], delta[1])  # ... but depends on the image
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_elements_are_independent():
    block = DAttention(96)
    _randomize(block)
    x = torch.randn(3, 96, 10, 14)
    together = block(x)
    apart = torch.cat([block(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-5)


def test_gradcheck_in_double():
    torch.manual_seed(0)
    block = DAttention(4, num_heads=2, groups=2, stride=2)
    _randomize(block)
    block.double()
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, ), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('stage', range(4))
def test_defaults_are_the_dat_pp_stage_settings(stage):
    """DAT++'s stages (64 / 128 / 256 / 512 channels) come out of the channel count."""
    arch = DAT_ARCH_SETTINGS['dat++-t']
    options = resolve_options(arch['dims'][stage])
    assert (options['num_heads'], options['groups'], options['stride'], options['ksize']) == (
        arch['heads'][stage], arch['groups'][stage], arch['strides'][stage],
        arch['ksizes'][stage])
    block = DAttention(arch['dims'][stage])
    assert block.attn.offset_range_factor == arch['offset_range_factor'][stage]
    assert block.attn.formulation == arch['formulation'] == 'v2'
    # the table spans the query map of DAT++'s 224-px pre-training (7 x 7 keys)
    assert block.attn.q_h == 224 // 4 // 2 ** stage


@pytest.mark.parametrize('channels,expected', [
    (96, (3, 1, 4, 7)), (48, (1, 1, 8, 9)), (384, (12, 6, 1, 3)), (1024, (32, 16, 1, 3)),
    (3, (1, 1, 8, 9)), (100, (2, 1, 4, 7))])
def test_defaults_for_other_widths(channels, expected):
    options = resolve_options(channels)
    assert (options['num_heads'], options['groups'], options['stride'],
            options['ksize']) == expected
    block = DAttention(channels)
    assert block(torch.randn(1, channels, 9, 7)).shape == (1, channels, 9, 7)


def test_is_the_backbone_layer():
    block = DAttention(64)
    stage = TransformerStage((8, 8), 64, 64, 1, ['D'], 2, groups=1, stride=8, ksize=9)
    assert type(block.attn) is type(stage.attns[0]) is DeformableAttention
    assert ({k for k in block.attn.state_dict()} == {k for k in stage.attns[0].state_dict()})


def test_zero_init_starts_as_identity_and_learns():
    torch.manual_seed(0)
    block = DAttention(32, zero_init=True)
    x = torch.randn(2, 32, 6, 5)
    assert torch.equal(block(x), x)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    target = torch.randn_like(x)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = (block(x) - target).square().mean()
        loss.backward()
        losses.append(loss.item())
        if len(losses) == 1:  # only the zeroed projection gets a gradient at first
            assert block.attn.proj_out.weight.grad.abs().sum() > 0
            assert block.attn.proj_q.weight.grad.abs().sum() == 0
        optimizer.step()
    assert block.attn.proj_q.weight.grad.abs().sum() > 0
    assert losses[-1] < losses[0]
    assert not torch.equal(block(x), x)


def test_reset_parameters_restores_own_init():
    block = DAttention(64, zero_init=True)
    with torch.no_grad():
        for p in block.parameters():
            p.fill_(3.0)
    block.reset_parameters()
    assert block.attn.proj_out.weight.abs().sum() == 0
    assert block.attn.rpe_table.abs().max() < 0.05
    assert block.norm.norm.weight.eq(1).all()
    assert block.attn.proj_q.weight.std() < 0.2


def test_without_residual_and_norm():
    block = DAttention(32, residual=False, pre_norm=False)
    _randomize(block)
    x = torch.randn(1, 32, 4, 4)
    torch.testing.assert_close(block(x), block.attn(x)[0])


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match='takes \\(B, 32, H, W\\) maps, got \\(1, 16, 4, 4\\)'):
        DAttention(32)(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match='zero_init=True needs residual=True'):
        DAttention(32, zero_init=True, residual=False)
    with pytest.raises(ValueError, match="unknown position_bias 'rpe'"):
        DAttention(32, position_bias='rpe')
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        DAttention(30, num_heads=4)


def test_importable_and_usable_with_torch_alone():
    """No mmdet / mmcv / mmengine: how a plain PyTorch (e.g. YOLOv8) user takes the block."""
    code = (
        "import sys\n"
        "for name in ('mmdet', 'mmcv', 'mmengine'):\n"
        "    sys.modules[name] = None\n"
        "import torch\n"
        "from dat_det.models.layers import DAttention\n"
        "block = DAttention(128)\n"
        "y = block(torch.randn(2, 128, 20, 20))\n"
        "assert y.shape == (2, 128, 20, 20)\n"
        "assert not any(m.split('.')[0] in ('mmdet', 'mmcv', 'mmengine') and sys.modules[m]\n"
        "               for m in sys.modules)\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]
