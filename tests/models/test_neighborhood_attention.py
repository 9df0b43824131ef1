"""Every neighbourhood-attention path against natten's definition, one query at a time.

The oracle (:mod:`dat_det.testing.natten_reference`) loops over queries and slices each
clamped window; the production paths (tiled halos, unfolded windows, index_select gathers,
natten's ops) share nothing with it. Forward and gradients of q, k, v and the bias ``rpb`` are
compared at borders, for odd sizes, maps of exactly the kernel and (through the module)
maps smaller than the kernel, batch 2. Wrong bias index rules and a dropped bias are shown to
fail the same comparison.
"""
import sys
import types

import pytest
import torch

from dat_det.models.layers.dat import (
    DAT_ARCH_SETTINGS,
    NeighborhoodAttention2D,
    build_trunk,
    neighborhood_attention_2d,
    neighborhood_attention_2d_gather,
    neighborhood_attention_2d_tiled,
    resolve_arch,
)
from dat_det.models.layers.dat import neighborhood_attention as na
from dat_det.testing.natten_reference import (
    neighborhood_attention_block_per_query,
    neighborhood_attention_per_query,
    window_start,
)

DTYPE = torch.float64
# (B, heads, H, W, hd), kernel, tile of the tiled path
CASES = {
    'batch2_odd_partial_tiles': ((2, 3, 9, 11, 4), 7, 8),
    'map_equals_kernel': ((1, 2, 7, 7, 3), 7, 8),
    'clamped_halos_both_borders': ((2, 2, 13, 20, 3), 5, 4),
    'tile_below_radius': ((1, 2, 15, 17, 3), 7, 3),
    'axis_shorter_than_tile': ((1, 1, 3, 17, 4), 3, 8),
}
# for the negative checks: clamped windows at all four borders, two tiles per axis
SMALL_CASE = ((1, 2, 8, 10, 3), 5, 4)


def run_reference(q, k, v, kernel, rpb, scale, tile):
    return neighborhood_attention_2d(q * scale, k, v, kernel, rpb)


def run_gather(q, k, v, kernel, rpb, scale, tile):
    return neighborhood_attention_2d_gather(q * scale, k, v, kernel, rpb)


def run_tiled(q, k, v, kernel, rpb, scale, tile):
    return neighborhood_attention_2d_tiled(q, k, v, kernel, rpb, scale=scale, tile=tile)


PATHS = {'reference': run_reference, 'gather': run_gather, 'tiled': run_tiled}


def _inputs(shape, kernel, seed=0):
    """q, k, v (B, heads, H, W, hd) and a bias (heads, 2k-1, 2k-1) of order-one values (a
    bias at its 0.02 init would hide a wrong index)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=gen, dtype=DTYPE).requires_grad_()
               for _ in range(3))
    rpb = torch.randn(shape[1], 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=DTYPE)
    return q, k, v, rpb.requires_grad_()


def _outputs_and_grads(fn, inputs, grad_out):
    out = fn(*inputs)
    return out, torch.autograd.grad(out, [t for t in inputs if t is not None], grad_out)


def _max_error(path, rpb_for_path=True):
    """Largest difference between ``path`` and the oracle (with a bias) on ``SMALL_CASE`` over
    the output and the gradients of q, k, v (and rpb when the path gets it)."""
    shape, kernel, tile = SMALL_CASE
    q, k, v, rpb = _inputs(shape, kernel)
    scale = 0.7
    oracle = neighborhood_attention_per_query(q * scale, k, v, kernel, rpb)
    grad_out = torch.randn_like(oracle)
    wrt = [q, k, v, rpb] if rpb_for_path else [q, k, v]
    expected = [oracle, *torch.autograd.grad(oracle, wrt, grad_out)]
    out = PATHS[path](q, k, v, kernel, rpb if rpb_for_path else None, scale, tile)
    actual = [out, *torch.autograd.grad(out, wrt, grad_out)]
    return max((a - e).abs().max().item() for a, e in zip(actual, expected))


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('path', sorted(PATHS))
@pytest.mark.parametrize('with_rpb', [True, False])
def test_path_equals_per_query_oracle(path, case, with_rpb):
    shape, kernel, tile = CASES[case]
    q, k, v, rpb = _inputs(shape, kernel)
    rpb = rpb if with_rpb else None
    scale = 0.7
    grad_out = torch.randn(shape, dtype=DTYPE)
    expected, expected_grads = _outputs_and_grads(
        lambda q, k, v, rpb: neighborhood_attention_per_query(q * scale, k, v, kernel, rpb),
        (q, k, v, rpb), grad_out)
    out, grads = _outputs_and_grads(
        lambda q, k, v, rpb: PATHS[path](q, k, v, kernel, rpb, scale, tile), (q, k, v, rpb),
        grad_out)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert len(grads) == (4 if with_rpb else 3)
    for name, g, e in zip('q k v rpb'.split(), grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10, msg=name)


def _negated(keys, queries, starts, kernel):
    return queries - keys + kernel - 1


def _off_by_one(keys, queries, starts, kernel):
    return keys - queries + kernel - 2


def _window_relative(keys, queries, starts, kernel):
    # place in the clamped window, centred: natten's index except where the window is clamped
    return keys - starts + kernel // 2


WRONG_RULES = {'negated': _negated, 'off_by_one': _off_by_one,
               'window_relative': _window_relative}


@pytest.mark.parametrize('path', sorted(PATHS))
@pytest.mark.parametrize('rule', sorted(WRONG_RULES))
def test_wrong_bias_index_fails_the_comparison(path, rule, monkeypatch):
    """The comparison above has teeth: each path with a wrong bias index rule (patched into
    the one function every path takes it from) misses the oracle; the window-relative rule
    differs only where windows are clamped, so this also shows that borders are covered."""
    assert _max_error(path) < 1e-10
    na._tile_plan.cache_clear()
    monkeypatch.setattr(na, 'bias_index', WRONG_RULES[rule])
    try:
        assert _max_error(path) > 1e-2
    finally:
        na._tile_plan.cache_clear()


@pytest.mark.parametrize('path', sorted(PATHS))
def test_dropped_bias_fails_the_comparison(path):
    assert _max_error(path, rpb_for_path=False) > 1e-2


def test_oracle_bias_row_is_key_minus_query():
    """The oracle's own rule on one map: query (i, j), key (a, b) adds
    rpb[a - i + k - 1, b - j + k - 1]; checked at corners and the centre by direct sums."""
    q, k, v, rpb = (t.detach() for t in _inputs((1, 1, 6, 9, 4), 3, seed=3))
    out = neighborhood_attention_per_query(q, k, v, 3, rpb)
    for i, j in [(0, 0), (5, 8), (2, 4), (5, 0)]:
        si, sj = window_start(i, 6, 3), window_start(j, 9, 3)
        keys = [(a, b) for a in range(si, si + 3) for b in range(sj, sj + 3)]
        logits = torch.stack([q[0, 0, i, j] @ k[0, 0, a, b] + rpb[0, a - i + 2, b - j + 2]
                              for a, b in keys])
        expected = sum(w * v[0, 0, a, b] for w, (a, b) in zip(logits.softmax(0), keys))
        torch.testing.assert_close(out[0, 0, i, j], expected)


# The module: padding of small maps, qkv split, scaling, projection, every backend ---------

def _module_oracle(module, x):
    return neighborhood_attention_block_per_query(
        x, module.qkv.weight, module.qkv.bias, module.proj.weight, module.proj.bias,
        module.num_heads, module.kernel_size, module.rpb)


def _randomized(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module


def _compare_module_with_oracle(module, size, seed=0, tol=1e-10):
    """Output and gradients (input and every parameter) of ``module`` on a batch of 2 equal
    the release block's computed by the oracle."""
    dtype = module.qkv.weight.dtype
    x = torch.randn(2, module.qkv.in_features, *size, dtype=dtype,
                    generator=torch.Generator().manual_seed(seed)).requires_grad_()
    params = [x, *module.parameters()]
    expected = _module_oracle(module, x)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, params, grad_out)
    out = module(x)[0]
    grads = torch.autograd.grad(out, params, grad_out)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    names = ['x'] + [n for n, _ in module.named_parameters()]
    assert 'rpb' in names
    for name, g, e in zip(names, grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol, msg=name)


MODULE_SIZES = [(3, 5), (5, 12), (7, 7), (10, 9)]  # both / one axis below the kernel 7


@pytest.mark.parametrize('size', MODULE_SIZES)
@pytest.mark.parametrize('backend', ['tiled', 'gather', 'reference'])
def test_module_equals_the_release_block(backend, size):
    module = NeighborhoodAttention2D(12, 7, 3, backend=backend).to(DTYPE)
    assert module.backend == backend
    _compare_module_with_oracle(_randomized(module), size)


def test_module_bias_is_the_releases():
    """``rpb`` as both releases create it: (heads, 2k-1, 2k-1), trunc-normal std 0.02."""
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(64, 7, 16)
    assert module.rpb.shape == (16, 13, 13) and module.rpb.requires_grad
    assert 0.018 < module.rpb.std().item() < 0.022 and module.rpb.abs().max() < 2
    assert NeighborhoodAttention2D(64, 7, 16, rel_pos_bias=False).rpb is None


@pytest.mark.parametrize('arch', sorted(a for a in DAT_ARCH_SETTINGS if a.startswith('dat++')))
def test_every_dat_pp_preset_gives_each_n_block_its_bias(arch):
    settings = resolve_arch(arch)
    trunk = build_trunk(settings, 224, 4, 3, 4, 0.0, 0.0, 0.0)
    found = {name: p.shape for name, p in trunk.stages.named_parameters(prefix='stages')
             if name.endswith('.rpb')}
    expected = {}
    for i, spec in enumerate(settings['stage_spec']):
        k = settings['nat_ksizes'][i]
        for d, letter in enumerate(spec):
            if letter == 'N':
                expected[f'stages.{i}.attns.{d}.rpb'] = (settings['heads'][i], 2 * k - 1,
                                                         2 * k - 1)
    assert len(expected) == 12 and found == expected


# natten, faked: the calls of each release's API, computed one query at a time -----------

def _check_natten_args(kernel_size, dilation):
    assert isinstance(kernel_size, int) and dilation == 1, (kernel_size, dilation)


def _fake_qk(query, key, rpb, kernel_size, dilation):
    """natten's QK: logits (B, heads, H, W, k*k) of each query's window, row-major."""
    _check_natten_args(kernel_size, dilation)
    b, n, h, w, _ = query.shape
    assert rpb is None or rpb.shape == (n, 2 * kernel_size - 1, 2 * kernel_size - 1)
    rows = []
    for i in range(h):
        top = window_start(i, h, kernel_size)
        cols = []
        for j in range(w):
            left = window_start(j, w, kernel_size)
            keys = key[:, :, top:top + kernel_size, left:left + kernel_size].flatten(2, 3)
            logits = torch.einsum('bnd,bnkd->bnk', query[:, :, i, j], keys)
            if rpb is not None:
                r, c = top - i + kernel_size - 1, left - j + kernel_size - 1
                logits = logits + rpb[:, r:r + kernel_size, c:c + kernel_size].flatten(1)
            cols.append(logits)
        rows.append(torch.stack(cols, 2))
    return torch.stack(rows, 2)


def _fake_av(attn, value, kernel_size, dilation):
    _check_natten_args(kernel_size, dilation)
    h, w = value.shape[2:4]
    out = torch.zeros_like(value)
    for i in range(h):
        top = window_start(i, h, kernel_size)
        for j in range(w):
            left = window_start(j, w, kernel_size)
            values = value[:, :, top:top + kernel_size, left:left + kernel_size].flatten(2, 3)
            out[:, :, i, j] = torch.einsum('bnk,bnkd->bnd', attn[:, :, i, j], values)
    return out


def _natten_0_14():
    def natten2dqkrpb(query, key, rpb, kernel_size, dilation):
        return _fake_qk(query, key, rpb, kernel_size, dilation)

    def natten2dav(attn, value, kernel_size, dilation):
        return _fake_av(attn, value, kernel_size, dilation)
    return dict(natten2dqkrpb=natten2dqkrpb, natten2dav=natten2dav)


def _natten_0_15():
    def na2d_qk(query, key, kernel_size, dilation, additional_keys=None):
        return _fake_qk(query, key, None, kernel_size, dilation)

    def na2d_qk_with_bias(query, key, bias, kernel_size, dilation, additional_keys=None):
        return _fake_qk(query, key, bias, kernel_size, dilation)

    def na2d_av(attn, value, kernel_size, dilation, additional_values=None):
        return _fake_av(attn, value, kernel_size, dilation)
    return dict(na2d_qk=na2d_qk, na2d_qk_with_bias=na2d_qk_with_bias, na2d_av=na2d_av,
                natten2dqkrpb=lambda q, k, rpb, ks, d: _fake_qk(q, k, rpb, ks, d),
                natten2dav=na2d_av)


def _natten_0_17():
    def na2d_qk(query, key, kernel_size, dilation=1, additional_keys=None, is_causal=False,
                rpb=None):
        assert not is_causal
        return _fake_qk(query, key, rpb, kernel_size, dilation)

    def na2d_av(attn, value, kernel_size, dilation=1, additional_values=None,
                is_causal=False):
        return _fake_av(attn, value, kernel_size, dilation)
    return dict(na2d_qk=na2d_qk, na2d_av=na2d_av)


def _natten_0_20():
    def na2d(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
             scale=None):
        raise AssertionError('the fused op has no relative-position bias')
    return dict(na2d=na2d)


FAKE_NATTEN = {'0.14': (_natten_0_14, 'natten2dqkrpb'),
               '0.15': (_natten_0_15, 'na2d_qk_with_bias'),
               '0.17': (_natten_0_17, 'na2d_qk'), '0.20': (_natten_0_20, None)}


@pytest.fixture(params=sorted(FAKE_NATTEN))
def fake_natten(request, monkeypatch):
    """A stand-in ``natten`` package with one release's unfused API; yields (version, api)."""
    make, api = FAKE_NATTEN[request.param]
    package = types.ModuleType('natten')
    functional = types.ModuleType('natten.functional')
    for name, fn in make().items():
        setattr(functional, name, fn)
    package.functional = functional
    monkeypatch.setitem(sys.modules, 'natten', package)
    monkeypatch.setitem(sys.modules, 'natten.functional', functional)
    monkeypatch.setattr(na, 'NATTEN_AVAILABLE', True)
    return request.param, api


@pytest.mark.parametrize('size', [(3, 5), (10, 9)])
def test_natten_backend_calls_each_release_right(fake_natten, size):
    version, api = fake_natten
    assert na.natten_api() == api
    auto = NeighborhoodAttention2D(12, 7, 3)
    if api is None:  # natten 0.20+: no biased op, so never chosen
        assert auto.backend == 'tiled'
        with pytest.raises(ValueError, match='natten 0.14 to 0.17'):
            NeighborhoodAttention2D(12, 7, 3, backend='natten')
        return
    assert auto.backend == 'natten' and auto.natten_api == api
    assert NeighborhoodAttention2D(12, 7, 3, use_natten=False).backend == 'tiled'
    _compare_module_with_oracle(_randomized(auto.to(DTYPE)), size)


def test_backend_choice_and_errors():
    default = NeighborhoodAttention2D(8, 3, 2)
    assert default.backend == ('natten' if na.natten_api() else 'tiled')
    with pytest.raises(ValueError, match='backend'):
        NeighborhoodAttention2D(8, 3, 2, backend='flex')
    if na.natten_api() is None:
        with pytest.raises(ValueError, match='natten'):
            NeighborhoodAttention2D(8, 3, 2, backend='natten')
    q, k, v, _ = (t.detach() for t in _inputs((1, 1, 4, 9, 2), 5))
    with pytest.raises(ValueError, match='at least the kernel'):
        neighborhood_attention_2d_tiled(q, k, v, 5)


@pytest.mark.skipif(na.natten_api() is None, reason='natten 0.14-0.17 is not installed')
def test_real_natten_equals_the_release_block():  # pragma: no cover - natten is optional
    module = NeighborhoodAttention2D(12, 7, 3, backend='natten')
    _compare_module_with_oracle(_randomized(module), (11, 9), tol=1e-4)
