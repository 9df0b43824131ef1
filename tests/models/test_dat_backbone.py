"""The registered DAT backbone: presets, odd sizes, freezing, checkpointing, and whole models
against the reference written from the equations (``dat_det.testing.dat_reference``) loaded
from its official-layout checkpoints."""
import pytest
import torch

pytest.importorskip('mmdet')

import dat_det.models  # noqa: E402,F401
from dat_det.models.checkpoint import (  # noqa: E402
    convert_official_dat_keys,
    extract_state_dict,
    load_official_dat,
    resize_position_tables,
)
from dat_det.models.layers.dat import DAT_ARCH_SETTINGS, resolve_arch  # noqa: E402
from dat_det.testing.dat_reference import official_checkpoint  # noqa: E402
from tests.helpers.dat_builders import (  # noqa: E402
    build_dat,
    randomize_backbone,
    reference_from_small,
)
from tests.helpers.dat_checks import SMALL, check_stem_and_downsampling  # noqa: E402


def _stage_sizes(h, w, conv_stem):
    sizes = []
    h, w = (-(-h // 2), -(-w // 2)) if conv_stem else (h, w)
    h, w = (-(-h // 2), -(-w // 2)) if conv_stem else (-(-h // 4), -(-w // 4))
    for _ in range(4):
        sizes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    return sizes


@pytest.mark.parametrize('arch', sorted(DAT_ARCH_SETTINGS))
def test_every_preset_builds_and_runs(arch):
    torch.manual_seed(0)
    model = build_dat(arch, small=False).eval()
    dims = DAT_ARCH_SETTINGS[arch]['dims']
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == dims
    assert [o.shape[-2:] for o in outs] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('arch', sorted(SMALL))
@pytest.mark.parametrize('size', [(225, 301), (64, 64), (33, 47)])
def test_odd_sizes_train_step(arch, size):
    torch.manual_seed(0)
    model = build_dat(arch).train()
    x = torch.randn(2, 3, *size)
    outs = model(x)
    conv_stem = DAT_ARCH_SETTINGS[arch]['use_conv_patches']
    assert [tuple(o.shape[-2:]) for o in outs] == _stage_sizes(*size, conv_stem)
    sum(o.square().mean() for o in outs).backward()
    rpe = [p for n, p in model.named_parameters() if n.endswith('rpe_table')]
    offsets = [p for n, p in model.named_parameters() if 'conv_offset' in n]
    assert rpe and offsets
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rpe + offsets)
    assert all(p.grad.abs().sum() > 0 for p in rpe)


def test_out_indices_and_positions():
    model = build_dat('dat++-t', out_indices=(1, 3)).eval()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        outs, positions = model.forward_with_positions(x)
        plain = model(x)
    assert [o.shape[1] for o in outs] == [32, 128]
    for a, b in zip(outs, plain):
        torch.testing.assert_close(a, b)
    assert [(p['stage'], p['block']) for p in positions] == [(0, 1), (1, 1), (2, 1), (3, 0),
                                                             (3, 1)]
    first = positions[0]
    assert first['pos'].shape == (1, 1, 3, 3, 2) and first['pos'].abs().max() <= 1


def test_frozen_stages_have_no_gradient():
    model = build_dat('dat-t', frozen_stages=2).train()
    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    frozen = ('patch_proj.', 'stages.0.', 'stages.1.', 'norms.0.', 'norms.1.', 'down_projs.0.')
    for name, param in model.named_parameters():
        if name.startswith(frozen):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.requires_grad and param.grad is not None, name
    assert not model.stages[1].training and model.stages[2].training


def test_with_cp_gives_equal_outputs_and_gradients():
    torch.manual_seed(0)
    plain = build_dat('dat++-t').train()
    ckpt = build_dat('dat++-t', with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96, requires_grad=True)
    x_cp = x.detach().clone().requires_grad_(True)
    outs, outs_cp = plain(x), ckpt(x_cp)
    for a, b in zip(outs, outs_cp):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in outs).backward()
    sum(o.square().sum() for o in outs_cp).backward()
    torch.testing.assert_close(x.grad, x_cp.grad)
    grads_cp = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads_cp[name].grad, msg=name)


def test_drop_path_is_stochastic_only_in_training():
    model = build_dat('dat-t', drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_loss_falls_in_a_few_steps():
    torch.manual_seed(0)
    model = build_dat('dat++-t').train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.randn(2, 128, 2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = (model(x)[-1] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_arch_raises():
    with pytest.raises(ValueError, match='unknown DAT arch'):
        build_dat('dat-xl', small=False)
    with pytest.raises(ValueError, match='unknown DAT arch fields'):
        build_dat('dat-t', dimz=[1, 2, 3, 4])
    with pytest.raises(ValueError, match='one entry per stage'):
        build_dat('dat-t', depths=[2, 2, 2])
    with pytest.raises(ValueError, match='out_indices'):
        build_dat('dat-t', out_indices=(4,))




# The v1 release runs only at its pre-training size; the reference (like dat_det) at any size.
# 'v1_options' adds the v1 conv stem, the v1 MLP with conv, tanh-squashed positions (factor -1)
# and a stride-2 key grid; 'options' adds layer scales, log-spaced continuous bias and
# clamped offsets with a range to DAT++.
V1_OPTIONS = dict(use_conv_patches=True, use_dwc_mlps=[True] * 4, strides=[-1, -1, 2, 1],
                  offset_range_factor=[-1, -1, -1, 2])
PP_OPTIONS = dict(layer_scale_values=[0.5] * 4, log_cpb=[False, False, True, False],
                  offset_range_factor=[-1, 2, -1, 3])
REFERENCE_CASES = {  # arch, pre-training size, input size, overrides
    'dat-t': ('dat-t', 128, (128, 128), dict(window_sizes=[4] * 4)),
    'dat-t_odd_size': ('dat-t', 128, (75, 101), dict(window_sizes=[4] * 4)),
    'dat-t_v1_options_odd_size': ('dat-t', 64, (67, 45), dict(window_sizes=[4] * 4,
                                                              **V1_OPTIONS)),
    'dat-t_full_preset_224': ('dat-t', 224, (224, 224), dict(small=False)),
    'dat++-t': ('dat++-t', 96, (96, 128), {}),
    'dat++-t_odd_size': ('dat++-t', 96, (61, 83), {}),
    'dat++-t_options': ('dat++-t', 64, (64, 80), PP_OPTIONS),
}


def _reference_checkpoint(arch, img_size, overrides, tmp_path, **kwargs):
    reference = reference_from_small(arch, img_size=img_size, **overrides, **kwargs).eval()
    randomize_backbone(reference)
    ckpt = official_checkpoint(reference)
    path = tmp_path / 'official.pth'
    torch.save(ckpt, path)
    return reference, ckpt, path


def _padded_batch(size):
    """Two images as mmdet batches them: the second one smaller, zero-padded at the
    bottom/right to the first one's size."""
    torch.manual_seed(7)
    x = torch.randn(2, 3, *size)
    x[1, :, size[0] * 3 // 4:] = 0
    x[1, :, :, size[1] * 2 // 3:] = 0
    return x


@pytest.mark.parametrize('case', list(REFERENCE_CASES))
def test_official_checkpoint_loads_and_gives_the_reference_features(case, tmp_path):
    arch, img_size, size, overrides = REFERENCE_CASES[case]
    reference, ckpt, path = _reference_checkpoint(arch, img_size, overrides, tmp_path)
    model = build_dat(arch, pretrain_img_size=img_size,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)), **overrides)
    report = load_official_dat(model, ckpt)
    assert report.unexpected == []
    assert all(k.startswith('norms.') for k in report.missing)
    model.init_weights()
    model.eval()
    x = _padded_batch(size) if max(size) < 200 else torch.randn(1, 3, *size)
    with torch.no_grad():
        maps = reference.stage_maps(x)
        outs = model(x)
        for i, (out, feat) in enumerate(zip(outs, maps)):
            torch.testing.assert_close(model.norms[i](feat), out, rtol=1e-5, atol=1e-5)
            # before the output norm too: the stage features themselves
            torch.testing.assert_close(model.stages[i](_stage_input(model, x, i))[0], feat,
                                       rtol=1e-5, atol=1e-5)
    for name, p in reference.named_parameters():
        if not name.startswith('cls_'):
            torch.testing.assert_close(model.get_parameter(name), p, msg=name)


def test_detection_checkpoint_gives_the_reference_outputs(tmp_path):
    """A DAT-Detection checkpoint (``state_dict``, ``backbone.`` keys, layer scales under
    ``gamma``, output norms ``norms.i``) gives the reference's normalised features."""
    overrides = dict(layer_scale_values=[0.5] * 4)
    reference, _, path = _reference_checkpoint('dat++-t', 64, overrides, tmp_path,
                                               layout='detection', out_indices=(1, 2, 3))
    assert any(k.endswith('layer_scales.0.gamma') for k in reference.state_dict())
    model = build_dat('dat++-t', pretrain_img_size=64, out_indices=(1, 2, 3),
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)), **overrides)
    model.init_weights()
    model.eval()
    x = _padded_batch((70, 90))
    with torch.no_grad():
        for out, expected in zip(model(x), reference(x)):
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch,overrides', [('dat-t', dict(window_sizes=[4] * 4)),
                                             ('dat++-t', PP_OPTIONS)])
def test_backbone_gradients_match_the_reference(arch, overrides):
    """Gradients of the image and of every weight, output norms included, through whole
    backbones of both formulations (DAT-Detection layout: layer scales are ``gamma`` there)."""
    reference = reference_from_small(arch, img_size=64, layout='detection', **overrides)
    randomize_backbone(reference)
    model = build_dat(arch, pretrain_img_size=64, **overrides)
    model.eval()
    report = load_official_dat(model, official_checkpoint(reference))
    assert report.missing == [] and report.unexpected == []
    x = _padded_batch((64, 72)).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    outs, expected = model(x), reference(x_ref)
    torch.manual_seed(11)
    weights = [torch.randn_like(o) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    sum((o * w).sum() for o, w in zip(expected, weights)).backward()
    for out, exp in zip(outs, expected):
        torch.testing.assert_close(out, exp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    ref_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        ref_name = name[:-len('weight')] + 'gamma' if '.layer_scales.' in name else name
        torch.testing.assert_close(p.grad, ref_params[ref_name].grad, rtol=1e-4, atol=1e-5,
                                   msg=name)


def _stage_input(model, x, stage):
    """The input of ``model.stages[stage]`` for image ``x``."""
    x = model.patch_proj(model.stem_pad(x))
    for i in range(stage):
        x = model.down_projs[i](model.down_pads[i](model.stages[i](x)[0]))
    return x


def test_dat_t_with_dat_pp_grids_does_not_match_the_v1_reference(tmp_path):
    """The v1 comparison can fail: DAT++'s normalisation on v1 weights differs clearly."""
    reference, _, path = _reference_checkpoint('dat-t', 128, dict(window_sizes=[4] * 4),
                                               tmp_path)
    model = build_dat('dat-t', pretrain_img_size=128, window_sizes=[4] * 4, formulation='v2',
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feat = reference.stage_maps(x)[3]
        out = model.stages[3](_stage_input(model, x, 3))[0]
    assert (out - feat).abs().max() > 1e-2


@pytest.mark.parametrize('arch', sorted(SMALL))
@pytest.mark.parametrize('conv_patches', [False, True])
def test_stem_and_downsampling_match_reference(arch, conv_patches):
    """Patch stem (4x4, padded) and 2x2 down-sampling, or the formulation's conv stem (v1: one
    7x7 conv, v2: two 3x3 convs) and 3x3 down-sampling."""
    check_stem_and_downsampling(resolve_arch(arch, **SMALL[arch],
                                             use_conv_patches=conv_patches))


def test_detector_checkpoint_keeps_backbone_only():
    reference = reference_from_small('dat++-t')
    state = {'backbone.' + k: v for k, v in reference.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    report = load_official_dat(build_dat('dat++-t'), {'state_dict': state})
    assert report.unexpected == []


def test_position_tables_are_resized_bicubically():
    reference = reference_from_small('dat-t', img_size=224)
    randomize_backbone(reference)
    model = build_dat('dat-t', pretrain_img_size=320, window_sizes=[7, 7, 7, 5])
    report = load_official_dat(model, {'model': reference.state_dict()})
    assert report.unexpected == []
    resized = set(report.resized)
    rpe_key = 'stages.2.attns.1.rpe_table'
    win_key = 'stages.3.attns.0.relative_position_bias_table'
    assert {rpe_key, win_key} <= resized
    src = reference.state_dict()[rpe_key]
    assert src.shape == (4, 27, 27) and model.get_parameter(rpe_key).shape == (4, 39, 39)
    expected = torch.nn.functional.interpolate(src[None], size=(39, 39), mode='bicubic')[0]
    torch.testing.assert_close(model.get_parameter(rpe_key).detach(), expected)
    table = reference.state_dict()[win_key]  # (13*13, heads) -> (9*9, heads)
    grid = table.t().reshape(1, -1, 13, 13)
    expected = torch.nn.functional.interpolate(grid, size=(9, 9), mode='bicubic')
    torch.testing.assert_close(model.get_parameter(win_key).detach(),
                               expected.reshape(grid.shape[1], 81).t())
    # a smooth table stays smooth: resizing a constant table keeps it constant
    const = {rpe_key: torch.full((4, 27, 27), 0.3)}
    out, _ = resize_position_tables(const, {rpe_key: torch.zeros(4, 39, 39)})
    torch.testing.assert_close(out[rpe_key], torch.full((4, 39, 39), 0.3))


@pytest.mark.slow
def test_full_size_forward_smallest_preset():
    model = build_dat('dat++-t', small=False).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape[-2:]) for o in outs] == [(200, 334), (100, 167), (50, 84), (25, 42)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_offline_conversion(tmp_path):
    """What ``tools/model_converters/dat_official2datdet.py`` does: keys converted by the
    library, saved as ``state_dict``, loaded through ``init_cfg``."""
    reference = reference_from_small('dat++-t')
    randomize_backbone(reference)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(official_checkpoint(reference), src)
    converted = convert_official_dat_keys(extract_state_dict(torch.load(src)))
    torch.save(dict(state_dict=converted), dst)
    assert not any(k.startswith(('module.', 'cls_')) for k in converted)
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in converted)
    model = build_dat('dat++-t', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    assert set(converted) == {k for k in model.state_dict() if not k.startswith('norms.')}
    for name, p in reference.named_parameters():
        if not name.startswith('cls_'):
            torch.testing.assert_close(model.get_parameter(name), p, msg=name)
