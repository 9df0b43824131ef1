"""The fast (tiled) neighbourhood attention against the reference gather and natten."""
import pytest
import torch

from dat_det.models.layers.dat import (
    NeighborhoodAttention2D,
    neighborhood_attention_2d,
    neighborhood_attention_2d_tiled,
)
from dat_det.models.layers.dat.neighborhood_attention import NATTEN_AVAILABLE


def _qkv(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize('shape,kernel,tile', [
    ((2, 3, 9, 11, 8), 7, 8),    # batch 2, odd sizes, one partial tile per axis
    ((1, 2, 7, 7, 4), 7, 8),     # map exactly the kernel: one window for every query
    ((2, 2, 13, 20, 4), 5, 4),   # several tiles, clamped halos at both borders
    ((1, 2, 15, 17, 4), 7, 3),   # tile smaller than the kernel radius
    ((1, 1, 3, 17, 4), 3, 8),    # one axis shorter than a tile
])
@pytest.mark.parametrize('with_rpb', [False, True])
def test_tiled_equals_reference_with_gradients(shape, kernel, tile, with_rpb):
    q, k, v = _qkv(shape)
    rpb = torch.randn(shape[1], 2 * kernel - 1, 2 * kernel - 1).requires_grad_() \
        if with_rpb else None
    scale = 0.7
    ref = neighborhood_attention_2d(q * scale, k, v, kernel, rpb)
    out = neighborhood_attention_2d_tiled(q, k, v, kernel, rpb, scale=scale, tile=tile)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(ref)
    inputs = [q, k, v] + ([rpb] if with_rpb else [])
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-5, atol=1e-5)


def test_tiled_bias_follows_natten_indexing():
    """A key at s of a query at i takes rpb[s - i + k - 1] (natten's get_pb_start)."""
    q, k, v = (t.detach() for t in _qkv((1, 1, 6, 9, 4), seed=3))
    rpb = torch.randn(1, 5, 5)
    out = neighborhood_attention_2d_tiled(q, k, v, 3, rpb, tile=4)
    for i, j in [(0, 0), (5, 8), (2, 4), (5, 0)]:
        si, sj = min(max(i - 1, 0), 3), min(max(j - 1, 0), 6)  # clamped window starts
        keys = k[0, 0, si:si + 3, sj:sj + 3].reshape(9, 4)
        bias = torch.stack([rpb[0, a - i + 2, b - j + 2]
                            for a in range(si, si + 3) for b in range(sj, sj + 3)])
        attn = (keys @ q[0, 0, i, j] + bias).softmax(0)
        torch.testing.assert_close(out[0, 0, i, j],
                                   attn @ v[0, 0, si:si + 3, sj:sj + 3].reshape(9, 4))


@pytest.mark.parametrize('size', [(3, 5), (10, 9)])
def test_module_backends_agree(size):
    """Maps smaller than the kernel (padded by the module) and batch 2, all gradients."""
    torch.manual_seed(0)
    fast = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, use_natten=False)
    assert fast.backend == 'tiled'
    ref = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, backend='reference')
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, *size, requires_grad=True)
    outs, grads = [], []
    for m in (fast, ref):
        y = m(x)[0]
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *m.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-5)


def test_backend_choice_and_errors():
    default = NeighborhoodAttention2D(8, 3, 2)
    assert default.backend == ('natten' if NATTEN_AVAILABLE else 'tiled')
    with pytest.raises(ValueError, match='backend'):
        NeighborhoodAttention2D(8, 3, 2, backend='flex')
    if not NATTEN_AVAILABLE:
        with pytest.raises(ValueError, match='natten'):
            NeighborhoodAttention2D(8, 3, 2, backend='natten')
    q, k, v = (t.detach() for t in _qkv((1, 1, 4, 9, 2)))
    with pytest.raises(ValueError, match='at least the kernel'):
        neighborhood_attention_2d_tiled(q, k, v, 5)


@pytest.mark.skipif(not NATTEN_AVAILABLE, reason='natten is not installed')
def test_natten_equals_tiled():  # pragma: no cover - natten is an optional extra
    torch.manual_seed(0)
    nat = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, backend='natten')
    fast = NeighborhoodAttention2D(16, 7, 2, rel_pos_bias=True, backend='tiled')
    fast.load_state_dict(nat.state_dict())
    x = torch.randn(2, 16, 11, 9)
    torch.testing.assert_close(nat(x)[0], fast(x)[0], rtol=1e-5, atol=1e-5)
