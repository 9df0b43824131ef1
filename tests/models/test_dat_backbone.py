"""The registered DAT backbone: presets, odd sizes, freezing, checkpointing, official weights."""
import importlib.util
from functools import partial
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('einops')

from mmdet.registry import MODELS  # noqa: E402

import dat_det.models  # noqa: E402,F401
from dat_det.models.checkpoint import load_official_dat, resize_position_tables  # noqa: E402
from dat_det.models.layers.dat import DAT_ARCH_SETTINGS  # noqa: E402
from dat_det.testing import dat_official as ref  # noqa: E402  (DAT++ release)
from dat_det.testing import dat_v1_official as ref_v1  # noqa: E402  (DAT v1 release)
from dat_det.testing.weights import randomize_parameters  # noqa: E402

# Small variants of the presets: same block types and options, fewer channels and blocks.
SMALL = {
    'dat-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8], groups=[-1, -1, 2, 4],
                  depths=[2, 2, 2, 2],
                  stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'], ['L', 'D']]),
    'dat++-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8], groups=[1, 2, 2, 4],
                    depths=[2, 2, 2, 2],
                    stage_spec=[['N', 'D'], ['N', 'D'], ['N', 'D'], ['D', 'D']]),
}


def build_dat(arch='dat++-t', small=True, **kwargs):
    overrides = dict(SMALL[arch]) if small else {}
    overrides.update(kwargs)
    overrides.setdefault('drop_path_rate', 0.0)
    return MODELS.build(dict(type='DAT', arch=arch, **overrides))


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


def _official_from_small(arch, img_size=224, small=True, **overrides):
    """The release the preset reproduces (v1 or DAT++), with the small settings."""
    settings = dict(DAT_ARCH_SETTINGS[arch])
    settings.update(SMALL[arch] if small else {})
    settings.update(overrides)
    release = ref_v1.DAT if settings['formulation'] == 'v1' else ref.OfficialDAT
    return release(img_size=img_size, **settings)


_randomize = partial(randomize_parameters, seed=3, scale=0.1)


# The v1 release runs only at its pre-training size (square, shift masks and rpe tables of
# that size): 128x128 with 4x4 windows; 'v1_options' adds the v1 conv stem, the v1 MLP with
# conv, tanh-squashed positions (factor -1) and a stride-2 key grid.
V1_OPTIONS = dict(use_conv_patches=True, use_dwc_mlps=[True] * 4, strides=[-1, -1, 2, 1],
                  offset_range_factor=[-1, -1, -1, 2])
OFFICIAL_CASES = {
    'dat-t': ('dat-t', (128, 128), dict(window_sizes=[4] * 4)),
    'dat-t_v1_options': ('dat-t', (128, 128), dict(window_sizes=[4] * 4, **V1_OPTIONS)),
    'dat-t_full_preset_224': ('dat-t', (224, 224), dict(small=False)),
    'dat++-t': ('dat++-t', (96, 128), {}),
}


def _official_checkpoint(arch, img_size, overrides, tmp_path):
    official = _official_from_small(arch, img_size=img_size, **overrides).eval()
    _randomize(official)
    ckpt = {'model': {'module.' + k: v for k, v in official.state_dict().items()},
            'epoch': 300}
    path = tmp_path / 'official.pth'
    torch.save(ckpt, path)
    return official, ckpt, path


@pytest.mark.parametrize('case', list(OFFICIAL_CASES))
def test_official_checkpoint_loads_and_gives_identical_features(case, tmp_path):
    arch, size, overrides = OFFICIAL_CASES[case]
    official, ckpt, path = _official_checkpoint(arch, max(size), overrides, tmp_path)
    model = build_dat(arch, pretrain_img_size=max(size),
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)), **overrides)
    report = load_official_dat(model, ckpt)
    assert report.unexpected == []
    assert all(k.startswith('norms.') for k in report.missing)
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = official.forward_features(x)
        outs = model(x)
        for i, (out, feat) in enumerate(zip(outs, feats)):
            torch.testing.assert_close(model.norms[i](feat), out, rtol=1e-5, atol=1e-5)
            # before the output norm too: the stage features themselves
            torch.testing.assert_close(model.stages[i](_stage_input(model, x, i))[0], feat,
                                       rtol=1e-5, atol=1e-5)
    for name, p in official.named_parameters():
        if not name.startswith('cls_'):
            torch.testing.assert_close(model.get_parameter(name), p, msg=name)


def _stage_input(model, x, stage):
    """The input of ``model.stages[stage]`` for image ``x``."""
    x = model.patch_proj(model.stem_pad(x))
    for i in range(stage):
        x = model.down_projs[i](model.down_pads[i](model.stages[i](x)[0]))
    return x


def test_dat_t_with_dat_pp_grids_does_not_match_the_v1_release(tmp_path):
    """The v1 comparison can fail: DAT++'s normalisation on v1 weights differs clearly."""
    official, _, path = _official_checkpoint('dat-t', 128, dict(window_sizes=[4] * 4), tmp_path)
    model = build_dat('dat-t', pretrain_img_size=128, window_sizes=[4] * 4, formulation='v2',
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feat = official.forward_features(x)[3]
        out = model.stages[3](_stage_input(model, x, 3))[0]
    assert (out - feat).abs().max() > 1e-2


def test_detector_checkpoint_keeps_backbone_only():
    official = _official_from_small('dat++-t')
    state = {'backbone.' + k: v for k, v in official.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    report = load_official_dat(build_dat('dat++-t'), {'state_dict': state})
    assert report.unexpected == []


def test_position_tables_are_resized_bicubically():
    official = _official_from_small('dat-t', img_size=224)
    _randomize(official)
    model = build_dat('dat-t', pretrain_img_size=320, window_sizes=[7, 7, 7, 5])
    report = load_official_dat(model, {'model': official.state_dict()})
    assert report.unexpected == []
    resized = set(report.resized)
    rpe_key = 'stages.2.attns.1.rpe_table'
    win_key = 'stages.3.attns.0.relative_position_bias_table'
    assert {rpe_key, win_key} <= resized
    src = official.state_dict()[rpe_key]
    assert src.shape == (4, 27, 27) and model.get_parameter(rpe_key).shape == (4, 39, 39)
    expected = torch.nn.functional.interpolate(src[None], size=(39, 39), mode='bicubic')[0]
    torch.testing.assert_close(model.get_parameter(rpe_key).detach(), expected)
    table = official.state_dict()[win_key]  # (13*13, heads) -> (9*9, heads)
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


def test_offline_converter(tmp_path):
    official = _official_from_small('dat++-t')
    _randomize(official)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'model': {'module.' + k: v for k, v in official.state_dict().items()}}, src)
    script = Path(__file__).resolve().parents[2] / 'tools' / 'model_converters' / \
        'dat_official2datdet.py'
    spec = importlib.util.spec_from_file_location('dat_converter', script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import sys
    argv = sys.argv
    sys.argv = [str(script), str(src), str(dst)]
    try:
        module.main()
    finally:
        sys.argv = argv
    converted = torch.load(dst, map_location='cpu')['state_dict']
    assert not any(k.startswith(('module.', 'cls_')) for k in converted)
    model = build_dat('dat++-t', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for name, p in official.named_parameters():
        if not name.startswith('cls_'):
            torch.testing.assert_close(model.get_parameter(name), p, msg=name)
