"""The DAT comparisons can fail: each formulation detail they guard, flipped in the reference,
makes the same comparison with dat_det fail (while it passes with the release's details).

A detail is one field of ``dat_det.testing.dat_reference.Details``; the comparisons are those of
``tests/helpers/dat_checks.py`` that the layer, stage and backbone tests run.
"""
import dataclasses
import re

import pytest
import torch

from dat_det.models.layers.dat import resolve_arch
from dat_det.testing.dat_reference import DETAILS
from tests.helpers.dat_checks import (
    SMALL,
    check_deformable,
    check_mlp,
    check_neighborhood,
    check_stage,
    check_stem_and_downsampling,
    check_window,
)


def _stem(arch, **overrides):
    return lambda details=None, grads=False: check_stem_and_downsampling(
        resolve_arch(arch, **SMALL[arch], **overrides), details=details)


def _v1(**opts):
    return dict(formulation='v1', size=(6, 9), q_size=(6, 9), ksize=5, **opts)


# name: (formulation whose details are flipped, comparison, its arguments, field, flipped value)
FLIPS = {
    'v2 key grid (i + 0.5) / (n - 1)': (
        'v2', check_deformable, dict(offset_range_factor=-1), 'key_grid', 'n'),
    'v1 key grid (i + 0.5) / n': (
        'v1', check_deformable, _v1(offset_range_factor=2), 'key_grid', 'n-1'),
    'v2 query grid i / (n - 1)': (
        'v2', check_deformable, dict(offset_range_factor=-1), 'query_grid', 'keys'),
    'v1 query grid = key grid': (
        'v1', check_deformable, _v1(offset_range_factor=-1), 'query_grid', 'corners'),
    'v2 offset range factor / (n - 1)': (
        'v2', check_deformable, dict(offset_range_factor=2), 'offset_range', 'n'),
    'v1 offset range factor / n': (
        'v1', check_deformable, _v1(offset_range_factor=2), 'offset_range', 'n-1'),
    'v2 factor 0: no offset': (
        'v2', check_deformable, dict(offset_range_factor=0), 'zero_factor', 'raw'),
    'v1 factor 0: raw offsets': (
        'v1', check_deformable, _v1(offset_range_factor=0), 'zero_factor', 'none'),
    'v2 factor < 0: clamp': (
        'v2', check_deformable, dict(offset_range_factor=-1), 'negative_factor', 'tanh'),
    'v1 factor < 0: tanh': (
        'v1', check_deformable, _v1(offset_range_factor=-1), 'negative_factor', 'clamp'),
    'v2 offset conv unpadded when ksize == stride': (
        'v2', check_deformable, dict(stride=2, ksize=2), 'offset_padding', 'always'),
    'v1 offset conv always padded': (
        'v1', check_deformable, dict(_v1(offset_range_factor=2), stride=3, ksize=3),
        'offset_padding', 'unless_ksize_is_stride'),
    'keys sampled with align_corners=True': (
        'v2', check_deformable, dict(offset_range_factor=2), 'sampling_align_corners', False),
    'deformable bias at (query - key) / 2': (
        'v2', check_deformable, dict(offset_range_factor=-1), 'bias_displacement',
        'key-query'),
    'v1 deformable bias at (query - key) / 2': (
        'v1', check_deformable, _v1(offset_range_factor=2), 'bias_displacement', 'key-query'),
    'window bias index query - key': (
        'v2', check_window, dict(shifted=False), 'window_bias', 'key-query'),
    'shift mask of the padded map': (
        'v2', check_window, dict(shifted=True), 'shift_mask', False),
    'natten bias rpb[s - i + k - 1]': (
        'v2', check_neighborhood, {}, 'neighborhood_bias', 'mirrored'),
    'v2 MLP act(h + dwc(h))': (
        'v2', check_mlp, dict(formulation='v2', dwc=True), 'dwc_mlp', 'replace'),
    'v1 MLP act(dwc(h))': (
        'v1', check_mlp, dict(formulation='v1', dwc=True), 'dwc_mlp', 'residual'),
    'LPU x + dwconv(x)': (
        'v2', check_stage, dict(formulation='v2', spec=['N', 'D'], use_lpu=True), 'lpu', False),
    'layer scale': (
        'v2', check_stage, dict(formulation='v2', spec=['D', 'L'], layer_scale_value=0.5),
        'layer_scale', False),
    'v2 stem GELU between its 3x3 convs': (
        'v2', _stem('dat++-t'), {}, 'stem_activation', False),
    'v2 stem padding': ('v2', _stem('dat++-t'), {}, 'stem_padding', False),
    'v1 conv stem padding': (
        'v1', _stem('dat-t', use_conv_patches=True), {}, 'stem_padding', False),
}


def _greatest_difference(message: str) -> float:
    """The greatest absolute difference an ``assert_close`` failure reports (inf for a shape
    mismatch)."""
    match = re.search(r'Greatest absolute difference: (\S+)', message)
    return float(match.group(1)) if match else float('inf')


@pytest.mark.parametrize('name', list(FLIPS))
def test_flipping_a_detail_fails_the_comparison(name):
    formulation, check, kwargs, field, value = FLIPS[name]
    right = DETAILS[formulation]
    assert getattr(right, field) != value
    check(**kwargs, grads=False, details=right)  # the release's detail: equal
    with pytest.raises(AssertionError) as failure:
        check(**kwargs, grads=False, details=dataclasses.replace(right, **{field: value}))
    message = str(failure.value)
    assert 'shape' in message or _greatest_difference(message) > 1e-3, message


@pytest.mark.parametrize('formulation,arch', [('v1', 'dat-t'), ('v2', 'dat++-t')])
def test_the_other_conv_stem_does_not_fit(formulation, arch):
    """The conv stems differ in structure (v1: one 7x7 conv; v2: two 3x3 convs): the other
    release's stem does not even take dat_det's stem weights."""
    other = 'two_3x3' if formulation == 'v1' else 'one_7x7'
    details = dataclasses.replace(DETAILS[formulation], conv_stem=other)
    with pytest.raises(RuntimeError, match='size mismatch|Missing key|Unexpected key'):
        _stem(arch, use_conv_patches=True)(details=details)


def test_details_of_the_two_releases_differ_where_the_readme_says():
    """The formulation table: key grid, query grid, offset range, factor 0 and < 0, offset conv
    padding, conv stem, MLP with conv; everything else is shared."""
    v1, v2 = DETAILS['v1'], DETAILS['v2']
    differing = {f.name for f in dataclasses.fields(v1) if getattr(v1, f.name) !=
                 getattr(v2, f.name)}
    assert differing == {'key_grid', 'query_grid', 'offset_range', 'zero_factor',
                         'negative_factor', 'offset_padding', 'conv_stem', 'dwc_mlp'}
    # and the grids themselves, cell 1 of 4
    from dat_det.testing.dat_reference.details import key_axis, query_axis
    assert key_axis(4, v1, torch.float64)[1] == 1.5 / 4 * 2 - 1
    assert key_axis(4, v2, torch.float64)[1] == 1.5 / 3 * 2 - 1
    assert query_axis(4, v2, torch.float64)[1] == 1 / 3 * 2 - 1
