"""``torch.autograd.gradcheck`` in float64 for the backends that run in this process."""
import pytest
import torch

from dat_det.ops import multi_scale_deformable_attn
from tests.helpers.msda_inputs import make_msda_inputs

GRADCHECK_CASES = [
    (1, ((3, 5), (1, 1)), 2, 3, 2, 3),
    (2, ((4, 3), (2, 2)), 1, 2, 3, 2),
]


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
@pytest.mark.parametrize('case', GRADCHECK_CASES)
def test_gradcheck_float64(backend, case):
    inputs = make_msda_inputs(*case, dtype=torch.float64, seed=7)

    def op(value, locations, weights):
        return multi_scale_deformable_attn(value, inputs['spatial_shapes'],
                                           inputs['level_start_index'], locations, weights,
                                           backend=backend)

    assert torch.autograd.gradcheck(
        op, (inputs['value'], inputs['sampling_locations'], inputs['attention_weights']),
        eps=1e-6, atol=1e-7)
