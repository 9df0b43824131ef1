"""Official DAT / DAT++ checkpoints load strictly into the mmdet backbone, the timm models and
the offline converter.

The checkpoints are built in the official layouts from a small dat_det model with every
weight moved off its init: the classification release (``model``; ``cls_norm`` /
``cls_head``; the L/S blocks' ``relative_position_index`` / ``attn_mask`` buffers) and
DAT-Detection (``state_dict``; ``backbone.`` keys with the output norms ``norms.i`` and
LayerScale ``gamma``; neck and heads beside).
"""
import logging
import uuid

import pytest
import torch

pytest.importorskip('mmdet')
timm = pytest.importorskip('timm')

from mmengine.logging import MMLogger  # noqa: E402

import dat_det.timm  # noqa: E402,F401
from dat_det.models.backbones import DAT  # noqa: E402
from dat_det.models.checkpoint import (  # noqa: E402
    CheckpointMismatchError,
    convert_official_checkpoint,
    load_official_dat,
)
from dat_det.models.layers.dat import (  # noqa: E402
    LocalAttention,
    NeighborhoodAttention2D,
    ShiftWindowAttention,
)
from dat_det.testing.weights import randomize_parameters  # noqa: E402
from dat_det.utils.errors import UserInputError, one_line  # noqa: E402

SMALL = {
    'dat++-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
                    groups=[1, 2, 2, 4], depths=[2, 2, 2, 2],
                    stage_spec=[['N', 'D'], ['N', 'D'], ['N', 'D'], ['D', 'D']]),
    'dat-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8],
                  groups=[-1, -1, 2, 4], depths=[2, 2, 2, 2],
                  stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'], ['L', 'D']]),
}
TIMM_NAME = {'dat++-t': 'dat_pp_tiny', 'dat-t': 'dat_tiny'}
NORMS_LINE = ('not in an ImageNet checkpoint: the detection output norms norms.0..3 start at '
              'their init')
BACKBONE_HINT = "to load only what fits, set strict=False in the backbone's init_cfg"


def build(arch='dat++-t', **kwargs):
    return DAT(arch=arch, drop_path_rate=0.0, **dict(SMALL[arch], **kwargs))


def trained(arch='dat++-t', seed=1, **kwargs):
    """A small backbone with every parameter (rpb, norms, layer scales) off its init."""
    model = build(arch, **kwargs)
    randomize_parameters(model, seed=seed)
    return model


def classification_checkpoint(model):
    """The classification release's layout: ``{'model': ...}`` with the classifier and the
    window blocks' index / mask buffers, without the detection output norms."""
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('norms.')}
    gen = torch.Generator().manual_seed(7)
    dim = model.num_features[-1]
    state.update({'cls_norm.norm.weight': torch.randn(dim, generator=gen),
                  'cls_norm.norm.bias': torch.randn(dim, generator=gen),
                  'cls_head.weight': torch.randn(1000, dim, generator=gen),
                  'cls_head.bias': torch.randn(1000, generator=gen)})
    for name, module in model.named_modules():
        if isinstance(module, LocalAttention):
            n = module.window_size[0] * module.window_size[1]
            state[f'{name}.relative_position_index'] = torch.zeros(n, n, dtype=torch.long)
        if isinstance(module, ShiftWindowAttention):
            state[f'{name}.attn_mask'] = torch.zeros(4, n, n)
    return {'model': state, 'epoch': 300, 'max_accuracy': 80.0}


def detection_checkpoint(model):
    """DAT-Detection's layout: ``{'state_dict': {'backbone.' ...}}``, LayerScale ``gamma``,
    the output norms, and the rest of the detector."""
    state = {}
    for key, value in model.state_dict().items():
        if '.layer_scales.' in key and key.endswith('.weight'):
            key = key[:-len('weight')] + 'gamma'
        state['backbone.' + key] = value.clone()
    state.update({'neck.lateral_convs.0.conv.weight': torch.zeros(4, 16, 1, 1),
                  'rpn_head.rpn_conv.weight': torch.zeros(4, 4, 3, 3),
                  'roi_head.bbox_head.fc_cls.weight': torch.zeros(81, 4)})
    return {'state_dict': state, 'meta': {}}


def save(checkpoint, tmp_path, name='official.pth'):
    path = tmp_path / name
    torch.save(checkpoint, path)
    return str(path)


@pytest.fixture
def logged():
    """Records (level, message) of the logger that ``init_weights`` finds current."""
    # a new name each time: only a newly created instance becomes the current one
    logger = MMLogger.get_instance(f'dat_checkpoint_test_{uuid.uuid4().hex}', log_level='INFO')
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))

    handler = Collect()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def assert_loaded_from(model, source, skip=()):
    for key, value in source.state_dict().items():
        if not key.startswith(skip):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


# The mmdet backbone, init_cfg=dict(type='Pretrained', ...) -------------------------------

@pytest.mark.parametrize('arch,overrides', [
    ('dat++-t', {}), ('dat++-t', dict(layer_scale_values=[1e-5] * 4)), ('dat-t', {})])
def test_imagenet_checkpoint_fills_every_weight(arch, overrides, tmp_path, logged):
    source = trained(arch, **overrides)
    path = save(classification_checkpoint(source), tmp_path)
    model = build(arch, init_cfg=dict(type='Pretrained', checkpoint=path), **overrides)
    fresh_norms = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('norms.')}
    model.init_weights()
    assert_loaded_from(model, source, skip=('norms.',))
    for key, value in fresh_norms.items():  # ones and zeros: the init, not the source's
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    if arch == 'dat++-t':
        rpb = [k for k in source.state_dict() if k.endswith('.rpb')]
        assert len(rpb) == 3 and all(source.state_dict()[k].abs().max() > 0.1 for k in rpb)
    n_tensors = len(source.state_dict()) - len(fresh_norms)
    expected = [('INFO', f'official DAT checkpoint: {n_tensors} tensors loaded')]
    if arch == 'dat-t':  # 6 L/S blocks with an index, 2 S blocks with a mask
        expected.append(('INFO', 'buffers this model recomputes, not loaded (8): attn_mask, '
                                 'relative_position_index'))
    expected += [('INFO', 'not used by the detection backbone: the ImageNet classifier '
                          'cls_head, cls_norm'),
                 ('INFO', NORMS_LINE)]
    assert [r for r in logged if not r[1].startswith('Loads checkpoint')] == expected


def test_detection_checkpoint_loads_its_norms_and_layer_scales(tmp_path, logged):
    source = trained(layer_scale_values=[1e-5] * 4)
    checkpoint = detection_checkpoint(source)
    assert any(k.endswith('.layer_scales.0.gamma') for k in checkpoint['state_dict'])
    path = save(checkpoint, tmp_path)
    model = build(layer_scale_values=[1e-5] * 4,
                  init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_loaded_from(model, source)  # norms.* included
    messages = [m for _, m in logged]
    assert 'detector checkpoint: its backbone is loaded, the 3 tensors of neck, roi_head, ' \
           'rpn_head are not used' in messages
    assert NORMS_LINE not in messages and all(level == 'INFO' for level, _ in logged)
    # mmengine's ``prefix`` selects the backbone the same way
    by_prefix = build(layer_scale_values=[1e-5] * 4, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    by_prefix.init_weights()
    assert_loaded_from(by_prefix, source)


def _without_rpb(model):
    for module in model.modules():
        if isinstance(module, NeighborhoodAttention2D):
            module.rpb = None  # the N block as it was built before it learnt natten's bias
    return model


def _extra(checkpoint):
    checkpoint['model']['stages.0.attns.0.extra_bias'] = torch.zeros(3)


def _missing(checkpoint):
    del checkpoint['model']['stages.1.attns.1.rpe_table']


def _wrong_shape(checkpoint):
    checkpoint['model']['down_projs.0.0.weight'] = torch.zeros(48, 32, 3, 3)


def _foreign_classifier(checkpoint):
    checkpoint['model']['head.weight'] = torch.zeros(1000, 128)


BROKEN = {  # change of the checkpoint, of the model, the text the error must contain
    'model_without_rpb': (None, _without_rpb,
                          '3 checkpoint tensors unused by this model: '
                          'stages.0.attns.0.rpb, stages.1.attns.0.rpb, stages.2.attns.0.rpb'),
    'extra_tensor': (_extra, None, '1 checkpoint tensor unused by this model: '
                                   'stages.0.attns.0.extra_bias'),
    'missing_tensor': (_missing, None, '1 model tensor not in the checkpoint: '
                                       'stages.1.attns.1.rpe_table'),
    'wrong_shape': (_wrong_shape, None, '1 tensor of another shape: '
                                        'down_projs.0.0.weight (48, 32, 3, 3)!=(32, 16, 3, 3)'),
    'unknown_classifier_name': (_foreign_classifier, None,
                                '1 checkpoint tensor unused by this model: head.weight'),
}


def _broken_case(case, tmp_path, **init):
    change_ckpt, change_model, text = BROKEN[case]
    source = trained()
    checkpoint = classification_checkpoint(source)
    if change_ckpt:
        change_ckpt(checkpoint)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=save(checkpoint, tmp_path),
                                **init))
    if change_model:
        change_model(model)
    return source, checkpoint, model, text


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_checkpoint_that_does_not_fit_is_refused_in_one_line(case, tmp_path):
    _, _, model, text = _broken_case(case, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        model.init_weights()
    message = str(info.value)
    assert isinstance(info.value, UserInputError) and one_line(info.value) == message
    assert message == f'checkpoint does not fit this DAT model: {text}; {BACKBONE_HINT}'
    for key, value in model.state_dict().items():  # nothing loaded
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize('case', ['model_without_rpb', 'extra_tensor', 'missing_tensor'])
def test_partial_load_only_when_asked(case, tmp_path, logged):
    source, _, model, text = _broken_case(case, tmp_path, strict=False)
    model.init_weights()
    assert ('WARNING', f'partial load (strict=False): {text}') in logged
    skip = ('norms.', 'stages.1.attns.1.rpe_table') if case == 'missing_tensor' else ('norms.',)
    assert_loaded_from(model, _without_rpb(source) if case == 'model_without_rpb' else source,
                       skip=skip)


def test_pretrained_init_cfg_fields_are_checked(tmp_path):
    path = save(classification_checkpoint(trained()), tmp_path)
    with pytest.raises(UserInputError, match=r"takes \('checkpoint', 'prefix', "
                                             r"'map_location', 'strict'\).*\['strcit'\]"):
        build(init_cfg=dict(type='Pretrained', checkpoint=path, strcit=False)).init_weights()
    with pytest.raises(UserInputError, match='one dict'):
        build(init_cfg=[dict(type='Pretrained', checkpoint=path)]).init_weights()
    with pytest.raises(UserInputError, match="no checkpoint tensor starts with prefix 'neck.'"):
        build(init_cfg=dict(type='Pretrained', checkpoint=path, prefix='neck.')).init_weights()


def test_output_norms_missing_from_a_detector_checkpoint(tmp_path, logged):
    """A detector that did not output stage 3 has no ``norms.3``: it starts at its init, said
    so; a norm with a weight and no bias is an incomplete checkpoint."""
    source = trained()
    checkpoint = detection_checkpoint(source)
    for key in [k for k in checkpoint['state_dict'] if k.startswith('backbone.norms.3.')]:
        del checkpoint['state_dict'][key]
    model = build(init_cfg=dict(type='Pretrained', checkpoint=save(checkpoint, tmp_path)))
    model.init_weights()
    assert_loaded_from(model, source, skip=('norms.3.',))
    assert ('INFO', 'not in this checkpoint: the detection output norm norms.3 starts at its '
                    'init') in logged
    del checkpoint['state_dict']['backbone.norms.2.norm.bias']
    with pytest.raises(CheckpointMismatchError,
                       match='1 model tensor not in the checkpoint: norms.2.norm.bias;'):
        load_official_dat(build(), checkpoint)


# The offline converter ----------------------------------------------------------------------

def test_converter_refuses_what_the_backbone_refuses(tmp_path, logged):
    source = trained()
    checkpoint = classification_checkpoint(source)
    _extra(checkpoint)
    with pytest.raises(CheckpointMismatchError, match='extra_bias; pass --partial'):
        convert_official_checkpoint(checkpoint, 'dat++-t', arch_options=SMALL['dat++-t'],
                                    hint='pass --partial to write the tensors that fit')
    state, report = convert_official_checkpoint(checkpoint, 'dat++-t',
                                                arch_options=SMALL['dat++-t'], strict=False)
    assert report.unexpected == ['stages.0.attns.0.extra_bias']
    assert 'stages.0.attns.0.extra_bias' not in state
    # the converted file: backbone keys, no classifier, no norms; it loads strictly again
    del checkpoint['model']['stages.0.attns.0.extra_bias']
    state, report = convert_official_checkpoint(checkpoint, 'dat++-t',
                                                arch_options=SMALL['dat++-t'])
    assert report.fits and not any(k.startswith(('cls_', 'norms.')) for k in state)
    path = save({'state_dict': state}, tmp_path, 'converted.pth')
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_loaded_from(model, source, skip=('norms.',))
    assert ('INFO', NORMS_LINE) in logged


def test_converter_command_line(tmp_path):
    """The script around :func:`convert_official_checkpoint`: one-line refusal, --partial."""
    from tests.helpers.tool_runs import run_tool

    checkpoint = classification_checkpoint(trained())
    _extra(checkpoint)
    src, dst = save(checkpoint, tmp_path), str(tmp_path / 'converted.pth')
    options = ['--arch', 'dat++-t', '--arch-options'] + [
        f'{k}={v!r}' for k, v in SMALL['dat++-t'].items()]
    proc = run_tool('model_converters/dat_official2datdet.py', src, dst, *options)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: checkpoint does not fit this DAT model: 1 checkpoint tensor unused by this '
        'model: stages.0.attns.0.extra_bias; pass --partial to write the tensors that fit')
    proc = run_tool('model_converters/dat_official2datdet.py', src, dst, *options, '--partial')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'warning: partial load (strict=False): 1 checkpoint tensor unused by this model: ' \
           'stages.0.attns.0.extra_bias' in proc.stdout
    assert NORMS_LINE in proc.stdout
    assert 'stages.0.attns.0.rpb' in torch.load(dst, map_location='cpu')['state_dict']


# timm ---------------------------------------------------------------------------------------

def create(arch, path=None, **kwargs):
    kwargs = dict(SMALL[arch], **kwargs)
    if path is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=path))
    return timm.create_model(TIMM_NAME[arch], **kwargs)


def test_timm_models_have_the_rpb_of_every_n_block():
    state = timm.create_model('dat_pp_tiny').state_dict()
    rpb = {k: tuple(v.shape) for k, v in state.items() if k.endswith('.rpb')}
    heads = [2, 4, 8]  # stages 0-2 of DAT++-T hold N blocks: 1, 2 and 9 of them
    expected = {f'stages.{i}.attns.{d}.rpb': (heads[i], 13, 13)
                for i, n in enumerate([1, 2, 9]) for d in range(0, 2 * n, 2)}
    assert rpb == expected


@pytest.mark.parametrize('arch', sorted(SMALL))
def test_timm_loads_an_imagenet_checkpoint_completely(arch, tmp_path, caplog):
    source = trained(arch)
    checkpoint = classification_checkpoint(source)
    path = save(checkpoint, tmp_path)
    with caplog.at_level(logging.INFO, logger='dat_det.timm.dat'):
        model = create(arch, path)
    state = model.state_dict()
    for key, value in checkpoint['model'].items():
        if key.rsplit('.', 1)[-1] not in ('relative_position_index', 'attn_mask'):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name == 'dat_det.timm.dat']


def test_timm_refuses_an_unused_tensor_unless_asked(tmp_path, caplog):
    checkpoint = classification_checkpoint(trained())
    _extra(checkpoint)
    path = save(checkpoint, tmp_path)
    with pytest.raises(CheckpointMismatchError) as info:
        create('dat++-t', path)
    assert str(info.value) == (
        'checkpoint does not fit this DAT model: 1 checkpoint tensor unused by this model: '
        'stages.0.attns.0.extra_bias; pass pretrained_strict=False to '
        'timm.create_model to load what fits')
    with caplog.at_level(logging.INFO, logger='dat_det.timm.dat'):
        model = create('dat++-t', path, pretrained_strict=False)
    assert ('partial load (strict=False): 1 checkpoint tensor unused by this model: '
            'stages.0.attns.0.extra_bias') in caplog.messages
    torch.testing.assert_close(model.stages[0].attns[0].rpb,
                               checkpoint['model']['stages.0.attns.0.rpb'])


def test_timm_uses_a_detector_checkpoints_norms_or_says_why_not(tmp_path, caplog):
    source = trained()
    path = save(detection_checkpoint(source), tmp_path)
    with pytest.raises(CheckpointMismatchError,
                       match=r'8 checkpoint tensors unused by this model: norms.0.norm'
                             r'.weight, .*or feature_norms=True to use the output norms$'):
        create('dat++-t', path)
    with caplog.at_level(logging.INFO, logger='dat_det.timm.dat'):
        model = create('dat++-t', path, feature_norms=True)
    assert_loaded_from(model, source)
    assert 'not in a backbone checkpoint: the classifier cls_head, cls_norm starts at its ' \
           'init' in caplog.messages
