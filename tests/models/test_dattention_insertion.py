"""DAttention inserted into mmdet's RTMDet, YOLOX and ResNet: where the blocks act, that the
original checkpoints load and, with zero_init, give the same outputs."""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402

import dat_det.models  # noqa: E402,F401
from dat_det.models.plugins import dattention_sites, insert_dattention  # noqa: E402
from dat_det.testing.weights import randomize_parameters  # noqa: E402
from tests.helpers import REPO_ROOT  # noqa: E402

CONFIGS = REPO_ROOT / 'configs' / 'dattention'
PLACES = ('csp', 'spp', 'neck', 'head')


@pytest.fixture(autouse=True, scope='module')
def _registry():
    register_all_modules()


def _config(name: str) -> Config:
    cfg = Config.fromfile(str(CONFIGS / name))
    inner = cfg.model.model if cfg.model.type == 'WithDAttention' else cfg.model
    inner.backbone.init_cfg = None  # no downloads
    return cfg


def _randomize_model(model: torch.nn.Module, seed: int = 0) -> None:
    """Parameters and batch-norm statistics off their init (zero and identity paths count)."""
    randomize_parameters(model, seed=seed, scale=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.add_(1.0)
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * .1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + .5)


def _plain_and_plugged(config: str, seed: int = 0):
    """The plain detector with random weights, and its plugged variant holding those weights
    (loaded non-strictly: only the blocks' keys may be missing)."""
    cfg = _config(config)
    torch.manual_seed(seed)
    plain = MODELS.build(cfg.model.model)
    _randomize_model(plain, seed)
    plugged = MODELS.build(cfg.model)
    result = plugged.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith('dattention.') for k in result.missing_keys)
    return plain.eval(), plugged.eval()


def _outputs(model, image):
    with torch.no_grad():
        return [t for level in model._forward(image) for t in level]


@pytest.mark.parametrize('place', PLACES)
def test_rtmdet_checkpoint_loads_and_zero_init_keeps_its_outputs(place, tmp_path):
    """A trained RTMDet-tiny (random weights here) saved, loaded into its plugged variant
    (strictly but for the new blocks): in eval mode the outputs are bit-identical."""
    cfg = _config(f'rtmdet_tiny_dattention-{place}_8xb32-300e_coco.py')
    plain = MODELS.build(cfg.model.model)
    _randomize_model(plain)
    path = tmp_path / 'rtmdet_tiny.pth'
    torch.save({'state_dict': plain.state_dict()}, path)

    plugged = MODELS.build(cfg.model)
    plugged.init_weights()
    state = torch.load(path, map_location='cpu')['state_dict']
    new_keys = {k for k in plugged.state_dict() if k.startswith('dattention.')}
    assert new_keys and set(plugged.state_dict()) - new_keys == set(state)
    plugged.load_state_dict({**state, **{k: plugged.state_dict()[k] for k in new_keys}},
                            strict=True)
    plain.eval()
    plugged.eval()
    image = torch.randn(2, 3, 96, 128)
    for ours, theirs in zip(_outputs(plugged, image), _outputs(plain, image)):
        assert torch.equal(ours, theirs)
    # ... and the blocks do run: moved off zero, the outputs change
    for block in plugged.dattention.values():
        torch.nn.init.normal_(block.attn.proj_out.weight, std=0.1)
    assert any(not torch.equal(a, b)
               for a, b in zip(_outputs(plugged, image), _outputs(plain, image)))


def test_yolox_all_places_at_once_keep_outputs():
    cfg = _config('yolox_s_dattention-spp_8xb8-300e_coco.py')
    plain = MODELS.build(cfg.model.model)
    _randomize_model(plain, seed=2)
    plugged = insert_dattention(copy.deepcopy(plain), [
        dict(after='backbone.stage[34].*.blocks.*.conv2'), dict(before='backbone.stage4.1'),
        dict(after='neck.top_down_blocks.*'), dict(after='neck.bottom_up_blocks.*'),
        dict(after='neck', index=[0, 1, 2])], defaults=dict(zero_init=True))
    assert len(plugged.dattention) == 3 + 1 + 1 + 4 + 3  # YOLOX-s: 3 + 1 CSP blocks
    plain.eval()
    plugged.eval()
    image = torch.randn(1, 3, 64, 96)
    for ours, theirs in zip(_outputs(plugged, image), _outputs(plain, image)):
        assert torch.equal(ours, theirs)


def _moved_blocks(model, seed=5):
    randomize_parameters(model.dattention, seed=seed, scale=0.1)


def test_before_spp_transforms_the_spp_input():
    plain, plugged = _plain_and_plugged('rtmdet_tiny_dattention-spp_8xb32-300e_coco.py')
    _moved_blocks(plugged)
    (block, ) = plugged.dattention.values()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        x = image
        for name in ('stem', 'stage1', 'stage2', 'stage3'):
            x = getattr(plain.backbone, name)(x)
        stage4 = plain.backbone.stage4
        expected = stage4[2](stage4[1](block(stage4[0](x))))
        assert torch.equal(plugged.backbone(image)[-1], expected)
        assert not torch.allclose(plain.backbone(image)[-1], expected)


def test_inside_csp_blocks_acts_before_the_identity_add():
    plain, plugged = _plain_and_plugged('rtmdet_tiny_dattention-csp_8xb32-300e_coco.py')
    _moved_blocks(plugged)
    sites = dattention_sites(plugged)
    assert [s.module_path for s in sites] == ['backbone.stage3.1.blocks.0.conv2',
                                              'backbone.stage4.2.blocks.0.conv2']
    plain_block = plain.backbone.stage3[1].blocks[0]
    assert plain_block.add_identity
    block = plugged.dattention[sites[0].name]
    z = torch.randn(2, 96, 5, 7)
    with torch.no_grad():
        expected = z + block(plain_block.conv2(plain_block.conv1(z)))
        torch.testing.assert_close(plugged.backbone.stage3[1].blocks[0](z), expected,
                                   rtol=0, atol=0)


def test_before_head_transforms_each_chosen_level():
    plain, plugged = _plain_and_plugged('rtmdet_tiny_dattention-head_8xb32-300e_coco.py')
    _moved_blocks(plugged)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = plugged.extract_feat(image), plain.extract_feat(image)
        for level in range(3):
            block = plugged.dattention[f'neck__out{level}']
            assert torch.equal(ours[level], block(theirs[level]))
            assert not torch.allclose(ours[level], theirs[level])


def test_neck_fusion_blocks_feed_the_next_fusion():
    plain, plugged = _plain_and_plugged('rtmdet_tiny_dattention-neck_8xb32-300e_coco.py')
    _moved_blocks(plugged)
    sites = [s.module_path for s in dattention_sites(plugged)]
    assert sites == ['neck.top_down_blocks.0', 'neck.top_down_blocks.1',
                     'neck.bottom_up_blocks.0', 'neck.bottom_up_blocks.1']
    seen = {}
    handle = plugged.neck.reduce_layers[1].register_forward_pre_hook(
        lambda m, args: seen.setdefault('reduce_in', args[0]))
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = plugged.backbone(image)
        plugged.neck(feats)
        handle.remove()
        # top-down block 0 fuses levels 2 and 1; its (transformed) output is reduced next
        neck = plugged.neck
        high = neck.reduce_layers[0](feats[2])
        fused = neck.top_down_blocks[0](torch.cat([neck.upsample(high), feats[1]], 1))
        assert torch.equal(seen['reduce_in'], fused)  # the hook ran inside this call too
    block = plugged.dattention['neck_top_down_blocks_0']
    with torch.no_grad():
        raw = plain.neck.top_down_blocks[0](torch.cat([plain.neck.upsample(high), feats[1]], 1))
        torch.testing.assert_close(fused, block(raw), rtol=0, atol=0)


def test_deepcopy_keeps_hooks_on_the_copied_blocks():
    _, plugged = _plain_and_plugged('rtmdet_tiny_dattention-spp_8xb32-300e_coco.py')
    _moved_blocks(plugged)
    ema = copy.deepcopy(plugged)
    image = torch.randn(1, 3, 64, 64)
    before = _outputs(plugged, image)
    torch.nn.init.zeros_(ema.dattention.backbone_stage4_1__input.attn.proj_out.weight)
    torch.nn.init.zeros_(ema.dattention.backbone_stage4_1__input.attn.proj_out.bias)
    after = _outputs(plugged, image)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert any(not torch.equal(a, b) for a, b in zip(before, _outputs(ema, image)))


def test_plugged_rtmdet_trains_its_blocks():
    """The blocks are in the training graph: at step 0 only the zeroed output projections get
    gradients (the zero_init path), one step later every parameter of every block does."""
    cfg = _config('rtmdet_tiny_dattention-neck_8xb32-300e_coco.py')
    cfg.model.model.bbox_head.num_classes = 3
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    from dat_det.analysis.inputs import random_batch
    batch = random_batch((64, 64), batch_size=2, num_classes=3, num_boxes=3, seed=0)
    data = model.data_preprocessor(batch, training=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(2):
        optimizer.zero_grad()
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(loss)
        loss.backward()
        for name, param in model.dattention.named_parameters():
            grad = 0.0 if param.grad is None else param.grad.abs().sum().item()
            if step == 1 and not name.endswith('proj_k.bias'):
                assert grad > 0, name
            elif step == 0:
                assert (grad > 0) == ('proj_out' in name), name
        optimizer.step()


def test_head_internal_site_needs_in_channels():
    cfg = _config('rtmdet_tiny_dattention-spp_8xb32-300e_coco.py')
    model = MODELS.build(cfg.model.model)
    with pytest.raises(ValueError, match="'bbox_head.cls_convs.0.0' does not run in "
                                         'extract_feat; give its in_channels'):
        insert_dattention(model, [dict(after='bbox_head.cls_convs.0.0')])
    insert_dattention(model, [dict(after='bbox_head.cls_convs.0.0', in_channels=96)])
    calls = []
    model.dattention['bbox_head_cls_convs_0_0'].register_forward_hook(
        lambda *a: calls.append(1))
    model.eval()
    _outputs(model, torch.randn(1, 3, 64, 64))
    assert calls == [1]


def test_bad_declarations_give_clear_errors():
    cfg = _config('rtmdet_tiny_dattention-spp_8xb32-300e_coco.py')
    model = MODELS.build(cfg.model.model)
    keys = set(model.state_dict())
    cases = [
        ([dict(after='backbone.stage5')],
         "no module matches 'backbone.stage5'; under 'backbone' there are: stage1, stage2, "
         'stage3, stage4, stem'),
        ([dict(after='neck')], "after 'neck', found tuple; give index="),
        ([dict(after='neck', before='neck')], 'exactly one of after= / before='),
        ([dict(after='neck', index=0, heads=4)], "unknown insert options \\['heads'\\]"),
        ([dict(before='backbone.stage4.1'), dict(before='backbone.stage4.*')],
         "two DAttention blocks before 'backbone.stage4.1'"),
        ([], 'at least one insert entry'),
    ]
    for insert, message in cases:
        with pytest.raises(ValueError, match=message):
            insert_dattention(model, insert)
    with pytest.raises(ValueError, match="unknown DAttention defaults \\['zero'\\]"):
        insert_dattention(model, [dict(after='neck', index=0)], defaults=dict(zero=True))
    assert set(model.state_dict()) == keys and not hasattr(model, 'dattention')


def test_resnet_plugins_keep_keys_and_outputs():
    """mmdet's ResNet builds the registered block as a bottleneck plug-in; a plain ResNet
    checkpoint loads (new keys only) and zero_init keeps its outputs, also after ResNet's own
    Kaiming init ran over the block."""
    from mmdet.models.backbones import ResNet

    def resnet(plugins=None):
        return ResNet(depth=50, base_channels=16, out_indices=(0, 1, 2, 3), plugins=plugins)

    torch.manual_seed(0)
    plain = resnet()
    _randomize_model(plain, seed=4)
    plugged = resnet([dict(cfg=dict(type='DAttention', zero_init=True),
                           stages=(False, False, True, True), position='after_conv2')])
    plugged.init_weights()
    result = plugged.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert {k.split('.dattention.')[0] for k in result.missing_keys} == {
        f'layer{s}.{i}' for s, n in ((3, 6), (4, 3)) for i in range(n)}
    plain.eval()
    plugged.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(plugged(image), plain(image)):
            assert torch.equal(ours, theirs)
    # placement: after conv2 (with its norm and ReLU) of a bottleneck
    bottleneck = plugged.layer3[1]
    randomize_parameters(bottleneck.dattention, seed=7, scale=0.1)
    x = torch.randn(1, 256, 4, 4)
    with torch.no_grad():
        out = bottleneck.relu(bottleneck.norm1(bottleneck.conv1(x)))
        out = bottleneck.dattention(bottleneck.relu(bottleneck.norm2(bottleneck.conv2(out))))
        expected = bottleneck.relu(bottleneck.norm3(bottleneck.conv3(out)) + x)
        torch.testing.assert_close(bottleneck(x), expected, rtol=0, atol=0)
