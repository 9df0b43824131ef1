"""DAT / DAT++ as timm models: registry, official checkpoints, features equal to the mmdet
backbone, logits equal to the reference written from the equations, feature extraction,
checkpointing."""
import pytest
import torch

timm = pytest.importorskip('timm')
pytest.importorskip('mmdet')

import dat_det.timm  # noqa: E402,F401
from dat_det.testing.dat_reference import official_checkpoint  # noqa: E402
from tests.helpers.dat_builders import (  # noqa: E402
    build_dat,
    randomize_backbone,
    reference_from_small,
)
from tests.helpers.dat_checks import SMALL  # noqa: E402

NAMES = ['dat_base', 'dat_pp_base', 'dat_pp_small', 'dat_pp_tiny', 'dat_small', 'dat_tiny']
ARCH_OF = {'dat_tiny': 'dat-t', 'dat_pp_tiny': 'dat++-t'}
# DAT at the pre-training size of its release (shifted windows of that size), DAT++ at another.
SIZE_OF = {'dat_tiny': (224, 224), 'dat_pp_tiny': (96, 128)}


def create(name, file=None, **kwargs):
    """A small variant of ``name`` (the SMALL fields of the DAT checks), optionally
    loaded from ``file`` through timm's pretrained route."""
    kwargs = dict(SMALL[ARCH_OF[name]], **kwargs)
    if file is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))
    return timm.create_model(name, **kwargs).eval()


@pytest.fixture(scope='module')
def official_files(tmp_path_factory):
    """Official-layout checkpoints (``model``, ``module.`` keys, classifier included) of the
    reference models of small DAT-T / DAT++-T with every weight moved off its init, and the
    reference models."""
    root = tmp_path_factory.mktemp('official')
    out = {}
    for name, arch in ARCH_OF.items():
        reference = reference_from_small(arch).eval()
        randomize_backbone(reference)
        path = root / f'{name}.pth'
        torch.save(official_checkpoint(reference), path)
        out[name] = (path, reference)
    return out


def test_registered_with_timm():
    assert timm.list_models('dat*') == NAMES
    assert all(timm.is_model(n) for n in NAMES)
    cfg = timm.models.get_pretrained_cfg('dat_pp_tiny')
    assert cfg.classifier == 'cls_head' and cfg.first_conv == 'patch_proj.0'


@pytest.mark.parametrize('name', sorted(ARCH_OF))
def test_logits_equal_the_reference(name, official_files):
    path, reference = official_files[name]
    model = create(name, path)
    x = torch.randn(2, 3, *SIZE_OF[name])
    with torch.no_grad():
        expected = reference(x)
        logits = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert pooled.shape == (2, 128)
    # the head is the official one: norm, average pooling, linear
    torch.testing.assert_close(model.cls_head(pooled), logits)


@pytest.mark.parametrize('name', sorted(ARCH_OF))
def test_features_equal_the_mmdet_backbone_with_the_same_file(name, official_files):
    path, _ = official_files[name]
    feats_model = create(name, path, features_only=True, out_indices=(1, 2, 3))
    backbone = build_dat(ARCH_OF[name], out_indices=(1, 2, 3),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, *SIZE_OF[name])
    with torch.no_grad():
        feats, expected = feats_model(x), backbone(x)
    assert feats_model.feature_info.channels() == [o.shape[1] for o in expected]
    assert len(feats) == 3
    for feat, out in zip(feats, expected):
        torch.testing.assert_close(feat, out, rtol=0, atol=0)


def test_detector_checkpoint_carries_its_trained_norms(tmp_path):
    """A dat_det detector checkpoint (``state_dict``, ``backbone.`` keys) gives the timm
    features model the backbone's weights, output norms included."""
    torch.manual_seed(0)
    backbone = build_dat('dat++-t', out_indices=(1, 2, 3)).eval()
    randomize_backbone(backbone)
    state = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    state['neck.convs.0.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    feats_model = create('dat_pp_tiny', path, features_only=True, out_indices=(1, 2, 3))
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for feat, out in zip(feats_model(x), backbone(x)):
            torch.testing.assert_close(feat, out, rtol=0, atol=0)
    # a classifier takes the trunk (and needs a new head); without feature norms the
    # detector's output norms would be unused, which only a partial load accepts
    with pytest.raises(ValueError, match='unused by this model: norms.1.norm.weight'):
        create('dat_pp_tiny', path, num_classes=3)
    classifier = create('dat_pp_tiny', path, num_classes=3, feature_norms=True)
    torch.testing.assert_close(classifier.stages[3].attns[0].proj_q.weight,
                               backbone.stages[3].attns[0].proj_q.weight)


def test_checkpoint_of_another_architecture_is_refused(official_files):
    path, _ = official_files['dat_tiny']
    with pytest.raises(ValueError, match='does not fit this DAT model'):
        create('dat_pp_tiny', path)


def test_new_classifier_keeps_the_trunk(official_files):
    path, reference = official_files['dat_pp_tiny']
    model = create('dat_pp_tiny', path, num_classes=7)
    assert model.cls_head.out_features == 7
    torch.testing.assert_close(model.stages[2].attns[1].rpe_table,
                               reference.stages[2].attns[1].rpe_table)


def test_features_only_full_preset_and_pruning():
    model = timm.create_model('dat_pp_tiny', features_only=True)
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 24), (1, 128, 8, 12),
                                               (1, 256, 4, 6), (1, 512, 2, 3)]

    pruned = create('dat_pp_tiny', features_only=True, out_indices=(0, 2)).train()
    assert len(pruned.model.stages) == 3 and not hasattr(pruned.model.cls_head, 'weight')
    feats = pruned(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [16, 64]
    sum(f.square().mean() for f in feats).backward()
    unused = [n for n, p in pruned.named_parameters() if p.grad is None]
    assert unused == [], unused  # nothing left that DDP would find unused


def test_forward_intermediates_of_the_classifier():
    torch.manual_seed(0)
    model = create('dat_pp_tiny').eval()
    randomize_backbone(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2)
        _, normed = model.forward_intermediates(x, indices=[3], norm=True)
        only = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        features = model.forward_features(x)
    assert [f.shape[1] for f in inter] == [64, 128]
    torch.testing.assert_close(final, features)
    torch.testing.assert_close(model.cls_norm(inter[1]), features)
    torch.testing.assert_close(normed[0], features)
    torch.testing.assert_close(only[0].shape[1], 32)


def test_grad_checkpointing_recomputes_blocks_with_equal_gradients():
    torch.manual_seed(0)
    plain = create('dat_pp_tiny', drop_path_rate=0.0).train()
    randomize_backbone(plain)
    ckpt = create('dat_pp_tiny').train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing()
    assert all(stage.with_cp for stage in ckpt.stages)

    calls = {'plain': 0, 'ckpt': 0}
    plain.stages[1].attns[1].register_forward_hook(
        lambda *_: calls.__setitem__('plain', calls['plain'] + 1))
    ckpt.stages[1].attns[1].register_forward_hook(
        lambda *_: calls.__setitem__('ckpt', calls['ckpt'] + 1))
    x = torch.randn(2, 3, 64, 64)
    out, out_cp = plain(x), ckpt(x)
    torch.testing.assert_close(out, out_cp)
    out.square().sum().backward()
    out_cp.square().sum().backward()
    assert calls == {'plain': 1, 'ckpt': 2}  # the block ran again in the backward pass
    grads = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)


def test_no_weight_decay_names_the_position_tables():
    model = create('dat_tiny')
    names = model.no_weight_decay()
    assert names and all(n.endswith(('rpe_table', 'relative_position_bias_table'))
                         for n in names)
    assert 'stages.2.attns.1.rpe_table' in names
