"""Degenerate layouts (a single 1x1, 1xN or Nx1 level, one point, one head, batch 1, samples
all outside the map): output and the three gradients of every backend that runs in this
process equal mmcv's ``multi_scale_deformable_attn_pytorch`` (the Triton kernels: the same
cases in ``triton_interpreter_cases.py``)."""
import pytest
import torch

from dat_det.ops import available_backends
from tests.helpers.msda_checks import assert_matches_mmcv
from tests.helpers.msda_inputs import DEGENERATE_CASES, degenerate_case_id

pytest.importorskip('mmcv.ops.multi_scale_deform_attn')


@pytest.mark.parametrize('backend', [b for b in available_backends('cpu') if b != 'triton'])
@pytest.mark.parametrize('case', DEGENERATE_CASES, ids=degenerate_case_id)
def test_degenerate_layouts_match_mmcv(backend, case):
    assert_matches_mmcv(backend, case)


@pytest.mark.parametrize('backend', ['pytorch', 'gather'])
def test_degenerate_layout_float32(backend):
    assert_matches_mmcv(backend, DEGENERATE_CASES[2], torch.float32, 1e-5)
