"""The op is one registered operator: ``torch.library.opcheck`` on every CPU backend."""
import pytest
import torch

from dat_det.ops import OP_NAME
from tests.ops.msda_test_inputs import make_msda_inputs

CASE = (2, ((5, 7), (3, 2)), 2, 8, 3, 4)


def assert_opcheck(backend: str, case=CASE) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch with
    dynamic shapes of the operator and its backward, on float32 and float64 inputs."""
    namespace, name = OP_NAME.split('::')
    op = getattr(getattr(torch.ops, namespace), name).default
    for dtype in (torch.float32, torch.float64):
        inputs = make_msda_inputs(*case, dtype=dtype)
        args = (inputs['value'], inputs['spatial_shapes'], inputs['level_start_index'],
                inputs['sampling_locations'], inputs['attention_weights'], backend)
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {'SUCCESS'}, results


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_opcheck(backend):
    assert_opcheck(backend)


def test_fake_tensor_output_metadata():
    """Under FakeTensorMode (what the compiler traces with) the output has the real op's
    shape and dtype, without reading any data; half inputs come out as the value's dtype."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    inputs = make_msda_inputs(*CASE, dtype=torch.float32, requires_grad=False)
    real = torch.ops.dat_det.multi_scale_deformable_attn(*inputs.values(), 'gather')
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_inputs = {k: mode.from_tensor(v) for k, v in inputs.items()}
        fake_inputs['value'] = fake_inputs['value'].to(torch.bfloat16)
        fake = torch.ops.dat_det.multi_scale_deformable_attn(*fake_inputs.values(), 'gather')
    assert fake.shape == real.shape and fake.dtype == torch.bfloat16
