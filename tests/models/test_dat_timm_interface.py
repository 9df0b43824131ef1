"""The timm models behave as timm's own families do under what timm's model suite checks of
them: config metadata, the head without pooling, training, features (getter and FX),
``forward_intermediates``, TorchScript, FX tracing forward and backward, FX + TorchScript.

The costly kinds run on small DAT-T / DAT++-T variants (the S and B presets differ from them
only in widths, depths, heads and groups, which the small overrides replace); every check
compares against the eager model with the same weights, moved off their init.
"""
import math

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip('timm')
pytest.importorskip('torchvision')

from timm.models import get_notrace_functions, get_notrace_modules  # noqa: E402
from torchvision.models.feature_extraction import (  # noqa: E402
    create_feature_extractor,
    get_graph_node_names,
)

import dat_det.timm  # noqa: E402,F401
from dat_det.models.layers.dat import DAT_ARCH_SETTINGS  # noqa: E402

NAMES = ['dat_tiny', 'dat_small', 'dat_base', 'dat_pp_tiny', 'dat_pp_small', 'dat_pp_base']
ARCH_OF = {'dat_tiny': 'dat-t', 'dat_small': 'dat-s', 'dat_base': 'dat-b',
           'dat_pp_tiny': 'dat++-t', 'dat_pp_small': 'dat++-s', 'dat_pp_base': 'dat++-b'}
# Small widths and depths with every block type of the family: L, S, D (DAT, 'v1') and N, D
# (DAT++, 'v2'); D blocks in every DAT++ stage, so each deformable option set is traced.
SMALL = {
    'dat_tiny': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
                     groups=[-1, -1, 2, 4], depths=[2, 2, 2, 2],
                     stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'], ['L', 'D']]),
    'dat_pp_tiny': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
                        groups=[1, 2, 2, 4], depths=[1, 1, 2, 1],
                        stage_spec=[['D'], ['D'], ['N', 'D'], ['D']]),
}
# Odd sizes: the stem, the down-samplings and the windows pad, the N blocks pad to the kernel.
SIZE = (1, 3, 61, 83)


def _tracer_kwargs():
    """What timm's FX helpers pass to torch.fx: its registered leaves and wrapped functions."""
    return dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                param_shapes_constant=True)


def _small(name, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, **SMALL[name], **kwargs)
    with torch.no_grad():  # off their init: zero-initialised tables and offsets count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _fx(model, train=False):
    """``model`` traced by torch.fx as timm's FX feature extraction traces it, returning the
    model's output."""
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=_tracer_kwargs())
    nodes = train_nodes if train else eval_nodes
    return create_feature_extractor(model, return_nodes={nodes[-1]: 'out'},
                                    tracer_kwargs=_tracer_kwargs())


@pytest.mark.parametrize('name', NAMES)
def test_pretrained_cfg_fits_the_model(name):
    """The cfg names a first conv of 3 input channels and a classifier with ``num_classes``
    rows, and its ``pool_size`` is the last stage's map at ``input_size``."""
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    dims = DAT_ARCH_SETTINGS[ARCH_OF[name]]['dims']
    state = model.state_dict()
    assert model.num_classes == cfg['num_classes'] == 1000
    assert model.num_features == model.head_hidden_size == dims[-1]
    assert state[cfg['classifier'] + '.weight'].shape == (1000, dims[-1])
    assert state[cfg['first_conv'] + '.weight'].shape[1] == cfg['input_size'][0] == 3
    assert [f['num_chs'] for f in model.feature_info] == dims
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    assert cfg['pool_size'] == tuple(s // 32 for s in cfg['input_size'][1:])


@pytest.mark.parametrize('name', sorted(SMALL))
def test_head_without_pooling_keeps_the_map(name):
    """``reset_classifier(0)`` gives the pooled features, ``reset_classifier(0, '')`` and
    ``global_pool=''`` the unpooled map, which is ``forward_features``; with classes, the
    unpooled head classifies each position, and their mean is the pooled model's logits (the
    head is linear)."""
    model = _small(name).eval()
    x = torch.randn(1, 3, *model.pretrained_cfg['input_size'][1:])
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model(x)
        assert features.shape == (1, 128, *model.pretrained_cfg['pool_size'])
        dense = timm.create_model(name, **SMALL[name], global_pool='')
        dense.load_state_dict(model.state_dict())
        per_position = dense.eval()(x)
        model.reset_classifier(0)
        pooled = model(x)
        model.reset_classifier(0, '')
        unpooled = model(x)
    assert logits.shape == (1, 1000)
    torch.testing.assert_close(pooled, pre_logits, rtol=0, atol=0)
    assert pooled.shape == (1, model.head_hidden_size)
    torch.testing.assert_close(unpooled, features, rtol=0, atol=0)
    expected = F.conv2d(features, dense.cls_head.weight[:, :, None, None], dense.cls_head.bias)
    assert per_position.shape == (1, 1000, *features.shape[-2:])
    torch.testing.assert_close(per_position, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_position.mean((2, 3)), logits, rtol=1e-4, atol=1e-4)

    unpooled_model = timm.create_model(name, **SMALL[name], num_classes=0, global_pool='')
    unpooled_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(unpooled_model.eval()(x), features, rtol=0, atol=0)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_features_only_getter_and_fx_agree(name):
    """``features_only`` maps with the channels and reductions of ``feature_info``, the same
    raw stage maps through timm's FX feature extractor (``feature_cls='fx'``) as through the
    getter (``forward_intermediates``) without feature norms."""
    getter = _small(name, features_only=True, feature_norms=False).eval()
    fx = timm.create_model(name, **SMALL[name], features_only=True,
                           feature_cls='fx').eval()
    # the getter wraps the model as ``model``, the FX extractor its traced graph
    weights = {'graph_module.' + k[len('model.'):]: v for k, v in getter.state_dict().items()}
    fx.load_state_dict({k: weights[k] for k in fx.state_dict()})
    x = torch.randn(*SIZE)
    with torch.no_grad():
        feats, fx_feats = getter(x), fx(x)
    assert len(feats) == len(getter.feature_info.channels()) == 4
    for feat, channels, reduction, fx_feat in zip(
            feats, getter.feature_info.channels(), getter.feature_info.reduction(), fx_feats):
        assert feat.shape[:2] == (1, channels)
        assert all(s <= math.ceil(n / reduction) + 1 for s, n in zip(feat.shape[-2:], SIZE[2:]))
        torch.testing.assert_close(fx_feat, feat, rtol=0, atol=0)
    # the norms run in forward_intermediates only, which FX does not trace
    with pytest.raises(ValueError, match="feature_cls='getter'"):
        timm.create_model(name, **SMALL[name], features_only=True, feature_norms=True,
                          feature_cfg=dict(feature_cls='fx'))


@pytest.mark.parametrize('name', sorted(SMALL))
def test_forward_intermediates_follow_feature_info(name):
    model = _small(name).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(*SIZE)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        features = model.forward_features(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert len(inter) == 4
    for o, channels, reduction in zip(inter, info.channels(), info.reduction()):
        assert o.shape[:2] == (1, channels)
        assert all(s <= math.ceil(n / reduction) + 1 for s, n in zip(o.shape[-2:], SIZE[2:]))
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    for a, b in zip(last_two, inter[2:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_torchscript_equals_eager(name):
    with timm.layers.set_scriptable(True):
        model = _small(name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(*SIZE)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-4)
        # a second size: nothing of the first one (shift masks, plans) is kept
        y = torch.randn(2, 3, 48, 40)
        torch.testing.assert_close(scripted(y), model(y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_fx_forward_equals_eager(name):
    model = _small(name).eval()
    traced = _fx(model)
    x = torch.randn(*SIZE)
    with torch.no_grad():
        torch.testing.assert_close(traced(x)['out'], model(x), rtol=0, atol=0)
        # the traced graph is not tied to the traced size
        y = torch.randn(2, 3, 48, 40)
        torch.testing.assert_close(traced(y)['out'], model(y), rtol=0, atol=0)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_fx_backward_gives_every_parameter_the_eager_gradient(name):
    model = _small(name, num_classes=42).train()
    traced = _fx(model, train=True)
    x = torch.randn(2, *SIZE[1:])
    out = traced(x)['out']
    assert out.shape == (2, 42)
    out.square().mean().backward()
    traced_grads = {n: p.grad.clone() for n, p in traced.named_parameters() if p.grad is not None}
    assert len(traced_grads) == len(list(traced.parameters()))
    model.zero_grad()
    model(x).square().mean().backward()
    for name_, p in model.named_parameters():
        torch.testing.assert_close(traced_grads[name_], p.grad, rtol=1e-5, atol=1e-6,
                                   msg=name_)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_fx_then_torchscript_equals_eager(name):
    with timm.layers.set_scriptable(True):
        model = _small(name).eval()
    scripted = torch.jit.script(_fx(model))
    for x in (torch.randn(*SIZE), torch.randn(2, 3, 48, 40)):
        with torch.no_grad():
            torch.testing.assert_close(scripted(x)['out'], model(x), rtol=1e-4, atol=1e-4)
