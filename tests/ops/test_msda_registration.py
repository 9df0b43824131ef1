"""The op is one registered operator: ``torch.library.opcheck`` on every CPU backend."""
import pytest
import torch

from dat_det.ops import OP_NAME
from tests.ops.msda_test_inputs import make_msda_inputs

CASE = (2, ((5, 7), (3, 2)), 2, 8, 3, 4)


def assert_opcheck(backend: str, case=CASE, save_taps: bool = False) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch with
    dynamic shapes of the operator and its backward, on float32 and float64 inputs."""
    namespace, name = OP_NAME.split('::')
    op = getattr(getattr(torch.ops, namespace), name).default
    for dtype in (torch.float32, torch.float64):
        inputs = make_msda_inputs(*case, dtype=dtype)
        args = (inputs['value'], inputs['spatial_shapes'], inputs['level_start_index'],
                inputs['sampling_locations'], inputs['attention_weights'], backend, save_taps)
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {'SUCCESS'}, results


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('save_taps', [False, True])
def test_opcheck(backend, save_taps):
    """``save_taps``: the forward hands its taps to the backward (``gather``); other
    backends ignore it."""
    assert_opcheck(backend, save_taps=save_taps)


def test_saved_taps_give_the_recomputed_gradients():
    """The backward from the forward's saved taps equals the one that recomputes them."""
    inputs = make_msda_inputs(*CASE, dtype=torch.float64)
    leaves = [inputs['value'], inputs['sampling_locations'], inputs['attention_weights']]
    grad_out = torch.randn(2, 4, 2 * 8, dtype=torch.float64)  # (B, Lq, heads * C) of CASE
    grads = []
    for save_taps in (False, True):
        outputs = torch.ops.dat_det.multi_scale_deformable_attn(*inputs.values(), 'gather',
                                                                save_taps)
        assert all(t.numel() > 0 for t in outputs[1:]) == save_taps
        grads.append(torch.autograd.grad(outputs[0], leaves, grad_out))
    for saved, recomputed in zip(grads[1], grads[0]):
        torch.testing.assert_close(saved, recomputed, rtol=0, atol=1e-13)


@pytest.mark.parametrize('save_taps', [False, True])
def test_fake_tensor_output_metadata(save_taps):
    """Under FakeTensorMode (what the compiler traces with) the outputs have the real op's
    shapes and dtypes, without reading any data; half inputs come out as the value's dtype
    (the taps stay in float32)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    inputs = make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False)
    real = torch.ops.dat_det.multi_scale_deformable_attn(*inputs.values(), 'gather', save_taps)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_inputs = {k: mode.from_tensor(v) for k, v in inputs.items()}
        fake_inputs['value'] = fake_inputs['value'].to(torch.bfloat16)
        fake = torch.ops.dat_det.multi_scale_deformable_attn(*fake_inputs.values(), 'gather',
                                                             save_taps)
    assert fake[0].shape == real[0].shape and fake[0].dtype == torch.bfloat16
    assert [(t.shape, t.dtype) for t in fake[1:]] == [(t.shape, t.dtype) for t in real[1:]]
