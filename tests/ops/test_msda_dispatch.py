"""Backend selection and input validation of ``multi_scale_deformable_attn``."""
import pytest
import torch

from dat_det.ops import BACKEND_ENV_VAR, multi_scale_deformable_attn, resolve_backend
from dat_det.ops.msda_op import triton_available, triton_interpreter_enabled
from tests.helpers.msda_inputs import make_msda_inputs

CASE = (2, ((5, 7), (3, 2)), 2, 8, 3, 4)


@pytest.fixture
def inputs():
    return make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False)


def test_auto_picks_gather_path_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    assert resolve_backend(None, torch.device('cpu')) == 'gather'
    assert resolve_backend('auto', torch.device('cpu')) == 'gather'


def test_argument_overrides_env_var(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'pytorch')
    assert resolve_backend(None, torch.device('cpu')) == 'pytorch'
    assert resolve_backend('gather', torch.device('cpu')) == 'gather'


def test_cpu_is_an_alias_of_gather(monkeypatch):
    assert resolve_backend('cpu', torch.device('cpu')) == 'gather'
    monkeypatch.setenv(BACKEND_ENV_VAR, 'CPU')
    assert resolve_backend(None, torch.device('cpu')) == 'gather'


def test_env_var_selects_backend_of_op(monkeypatch, inputs):
    """The env var reaches the op: a backend that cannot run makes it raise."""
    monkeypatch.setenv(BACKEND_ENV_VAR, 'no-such-backend')
    with pytest.raises(ValueError, match=BACKEND_ENV_VAR):
        multi_scale_deformable_attn(**inputs)
    monkeypatch.setenv(BACKEND_ENV_VAR, 'PyTorch')
    torch.testing.assert_close(multi_scale_deformable_attn(**inputs),
                               multi_scale_deformable_attn(**inputs, backend='gather'))


def test_unknown_backend_argument(inputs):
    with pytest.raises(ValueError, match="backend='cuda' is not"):
        multi_scale_deformable_attn(**inputs, backend='cuda')


@pytest.mark.skipif(not triton_available() or triton_interpreter_enabled(),
                    reason='needs triton outside interpreter mode')
def test_triton_backend_refuses_cpu_tensors(inputs):
    with pytest.raises(ValueError, match='triton needs CUDA tensors'):
        multi_scale_deformable_attn(**inputs, backend='triton')


def _replace(inputs, **changes):
    return {**inputs, **changes}


@pytest.mark.parametrize('change, message', [
    (lambda x: dict(value=x['value'][:, :, :1]), 'number of heads mismatch'),
    (lambda x: dict(value=x['value'][:1]), 'batch size mismatch'),
    (lambda x: dict(value=x['value'][:, :-1]), 'value has S=40 positions'),
    (lambda x: dict(value=x['value'][0]), r'value must have shape \(B, S, heads, C\)'),
    (lambda x: dict(attention_weights=x['attention_weights'][..., :2]),
     'attention_weights must have shape'),
    (lambda x: dict(sampling_locations=x['sampling_locations'][..., :1]),
     'sampling_locations must have shape'),
    (lambda x: dict(spatial_shapes=x['spatial_shapes'][:1]), 'number of levels mismatch'),
    (lambda x: dict(spatial_shapes=x['spatial_shapes'].flip(0)),
     'level_start_index .* is inconsistent with spatial_shapes'),
    (lambda x: dict(level_start_index=x['level_start_index'] + 1),
     'level_start_index .* is inconsistent with spatial_shapes'),
    (lambda x: dict(level_start_index=x['level_start_index'][:1]),
     r'level_start_index must have shape \(levels,\)'),
    (lambda x: dict(spatial_shapes=x['spatial_shapes'].float()),
     'spatial_shapes must be an integer tensor'),
    (lambda x: dict(value=x['value'].long()), 'value must be a floating point tensor'),
    (lambda x: dict(attention_weights=x['attention_weights'].int()),
     'attention_weights must be a floating point tensor'),
    (lambda x: dict(spatial_shapes=torch.tensor([[5, 7], [0, 2]])),
     'spatial_shapes must hold positive'),
])
def test_bad_input_raises_value_error(inputs, change, message):
    with pytest.raises(ValueError, match=message):
        multi_scale_deformable_attn(**_replace(inputs, **change(inputs)))


def test_int32_index_tensors_are_accepted(inputs):
    expected = multi_scale_deformable_attn(**inputs, backend='pytorch')
    actual = multi_scale_deformable_attn(
        **_replace(inputs, spatial_shapes=inputs['spatial_shapes'].int(),
                   level_start_index=inputs['level_start_index'].int()), backend='gather')
    torch.testing.assert_close(actual, expected)


def test_non_contiguous_inputs(inputs):
    expected = multi_scale_deformable_attn(**inputs, backend='pytorch')
    strided = {k: (v.transpose(0, 1).contiguous().transpose(0, 1) if v.dim() > 2 else v)
               for k, v in inputs.items()}
    assert not strided['value'].is_contiguous()
    torch.testing.assert_close(multi_scale_deformable_attn(**strided, backend='gather'), expected)


@pytest.mark.parametrize('case', [(1, ((5, 7),), 2, 8, 2, 0), (0, ((5, 7),), 2, 8, 2, 3)],
                         ids=['no-queries', 'no-images'])
def test_empty_inputs(case):
    inputs = make_msda_inputs(*case, dtype=torch.float64)
    out = multi_scale_deformable_attn(**inputs, backend='gather')
    assert out.shape == (case[0], case[5], case[2] * case[3])
    out.sum().backward()
    assert inputs['value'].grad.abs().sum() == 0


def test_level_sizes_as_python_ints(inputs):
    """Sizes given as ints are checked where they are known, and give the same output."""
    sizes = [tuple(hw) for hw in inputs['spatial_shapes'].tolist()]
    expected = multi_scale_deformable_attn(**inputs, backend='pytorch')
    actual = multi_scale_deformable_attn(**_replace(inputs, spatial_shapes=sizes,
                                                    level_start_index=None), backend='gather')
    torch.testing.assert_close(actual, expected)
    with pytest.raises(ValueError, match='value has S=40 positions'):
        multi_scale_deformable_attn(**_replace(inputs, value=inputs['value'][:, :-1],
                                               spatial_shapes=sizes, level_start_index=None))
    with pytest.raises(ValueError, match='spatial_shapes must hold positive'):
        multi_scale_deformable_attn(**_replace(inputs, spatial_shapes=[(5, 7), (0, 2)],
                                               level_start_index=None))


def test_a_fresh_tensor_at_a_reused_address_is_checked(inputs):
    """No cache keyed on addresses: every call checks the layout of its own tensors."""
    multi_scale_deformable_attn(**inputs)
    bad = inputs['spatial_shapes'].clone()
    bad.copy_(bad.flip(0))
    with pytest.raises(ValueError, match='inconsistent with spatial_shapes'):
        multi_scale_deformable_attn(**_replace(inputs, spatial_shapes=bad))


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_inference_mode(inputs, backend):
    expected = multi_scale_deformable_attn(**inputs, backend='pytorch')
    with torch.inference_mode():
        out = multi_scale_deformable_attn(**inputs, backend=backend)
    torch.testing.assert_close(out, expected)
