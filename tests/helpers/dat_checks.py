"""Comparisons of dat_det's DAT layers with the reference written from the equations
(``dat_det.testing.dat_reference``), shared by the DAT test modules.

Each ``check_*`` builds a dat_det module and its reference, moves the reference's weights off
their init, copies them into dat_det's module, runs both on the same input and asserts equal
outputs (and gradients where stated). ``details`` replaces the reference's formulation switches:
the tests that flip one detail expect the same check to fail.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional

import torch

from dat_det.models.layers.dat import (
    DeformableAttention,
    LocalAttention,
    NeighborhoodAttention2D,
    ShiftWindowAttention,
    TransformerMLP,
    TransformerMLPWithConv,
    TransformerMLPWithConvV1,
    TransformerStage,
    build_trunk,
)
from dat_det.testing.dat_reference import (
    DETAILS,
    DATReference,
    DeformableAttentionReference,
    Details,
    MLPReference,
    NeighborhoodAttentionReference,
    StageReference,
    WindowAttentionReference,
)
from dat_det.testing.weights import copy_weights, randomize_parameters

# Small variants of the presets: same block types and options, fewer channels and blocks.
SMALL = {
    'dat-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8], groups=[-1, -1, 2, 4],
                  depths=[2, 2, 2, 2],
                  stage_spec=[['L', 'S'], ['L', 'S'], ['L', 'D'], ['L', 'D']]),
    'dat++-t': dict(dim_stem=16, dims=[16, 32, 64, 128], heads=[1, 2, 4, 8], groups=[1, 2, 2, 4],
                    depths=[2, 2, 2, 2],
                    stage_spec=[['N', 'D'], ['N', 'D'], ['N', 'D'], ['D', 'D']]),
}
RTOL = ATOL = 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5
randomize = partial(randomize_parameters, seed=1, scale=0.2)


def assert_equal_gradients(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Every trainable parameter of ``ours`` has the gradient of its namesake in ``ref`` (a
    missing gradient counts as zero)."""
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        if not p.requires_grad:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        ref_grad = ref_params[name].grad
        ref_grad = ref_grad if ref_grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=name)


def _run(ours, ref, x, grads: bool):
    """Both modules on ``x``; with ``grads``, backward of one random projection of each first
    output, input gradients compared."""
    x_ours = x.clone().requires_grad_(grads)
    x_ref = x.clone().requires_grad_(grads)
    out, out_ref = ours(x_ours), ref(x_ref)
    first, first_ref = (out[0], out_ref[0]) if isinstance(out, tuple) else (out, out_ref)
    torch.testing.assert_close(first, first_ref, rtol=RTOL, atol=ATOL)
    if grads:
        weight = torch.randn_like(first)
        (first * weight).sum().backward()
        (first_ref * weight).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
        assert_equal_gradients(ours, ref)
    return out, out_ref


def check_deformable(formulation: str = 'v2', size=(8, 8), batch: int = 2, dim: int = 24,
                     heads: int = 6, groups: int = 3, q_size=(8, 8), stride: int = 1,
                     ksize: int = 3, grads: bool = True, details: Optional[Details] = None,
                     **opts) -> None:
    """Deformable attention: output, sampling positions, reference points (and gradients)."""
    ours = DeformableAttention(dim, heads, groups, q_size, stride=stride, ksize=ksize,
                               formulation=formulation, **opts)
    ref = DeformableAttentionReference(dim, heads, groups, q_size, stride=stride, ksize=ksize,
                                       details=details or DETAILS[formulation], **opts)
    randomize(ref)
    copy_weights(ref, ours)
    torch.manual_seed(5)
    (_, pos, refp), (_, pos_ref, refp_ref) = _run(ours, ref, torch.randn(batch, dim, *size),
                                                  grads)
    torch.testing.assert_close(pos, pos_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(refp, refp_ref, rtol=RTOL, atol=ATOL)


def check_window(shifted: bool, size=(9, 13), window: int = 4, grads: bool = True,
                 details: Optional[Details] = None) -> None:
    """Local / shifted window attention on a map that is padded to the window."""
    dim, heads, shift = 16, 2, window // 2 + window % 2
    ours = ShiftWindowAttention(dim, heads, window, shift_size=shift) if shifted \
        else LocalAttention(dim, heads, window)
    ref = WindowAttentionReference(dim, heads, window, shift if shifted else 0,
                                   details=details or DETAILS['v2'])
    randomize(ref)
    copy_weights(ref, ours)
    torch.manual_seed(5)
    _run(ours, ref, torch.randn(2, dim, *size), grads)


def check_neighborhood(size=(9, 11), kernel: int = 5, grads: bool = True,
                       details: Optional[Details] = None) -> None:
    """Neighbourhood attention with natten's bias ``rpb`` (maps below the kernel padded)."""
    ours = NeighborhoodAttention2D(16, kernel, 2, use_natten=False)
    ref = NeighborhoodAttentionReference(16, kernel, 2, details=details or DETAILS['v2'])
    randomize(ref)
    copy_weights(ref, ours)
    torch.manual_seed(5)
    _run(ours, ref, torch.randn(2, 16, *size), grads)


def check_mlp(formulation: str, dwc: bool, grads: bool = True,
              details: Optional[Details] = None) -> None:
    """The plain MLP, or the release's MLP with a depth-wise conv."""
    if not dwc:
        ours = TransformerMLP(8, 4)
    else:
        ours = (TransformerMLPWithConvV1 if formulation == 'v1' else TransformerMLPWithConv)(8, 4)
    ref = MLPReference(8, 4, dwc, formulation, details or DETAILS[formulation])
    randomize(ref)
    copy_weights(ref, ours)
    torch.manual_seed(5)
    _run(ours, ref, torch.randn(2, 8, 5, 3), grads)


def check_stage(formulation: str, spec, fmap=(8, 12), size=None, dim_in: int = 16,
                dim: int = 32, heads: int = 4, groups: int = 2, window: int = 4,
                grads: bool = True, details: Optional[Details] = None, **opts) -> None:
    """A whole stage (input projection, every block, pre-norm residuals) and the sampling
    positions of its deformable blocks."""
    kwargs = dict(window_size=window, groups=groups, stride=opts.pop('stride', 1),
                  offset_range_factor=opts.pop('offset_range_factor', 2), use_pe=True,
                  ksize=opts.pop('ksize', 5), nat_ksize=opts.pop('nat_ksize', 5), **opts)
    ours = TransformerStage(fmap, dim_in, dim, len(spec), spec, heads, formulation=formulation,
                            **kwargs).eval()
    ref = StageReference(fmap, dim_in, dim, len(spec), spec, heads, release=formulation,
                         details=details or DETAILS[formulation], **kwargs)
    randomize(ref)
    copy_weights(ref, ours)
    torch.manual_seed(5)
    (_, positions), (_, ref_positions) = _run(ours, ref, torch.randn(2, dim_in,
                                                                     *(size or fmap)), grads)
    for p, r in zip(positions, ref_positions):
        assert (p is None) == (r is None)
        if p is not None:
            torch.testing.assert_close(p[0], r[0], rtol=RTOL, atol=ATOL)


def check_stem_and_downsampling(settings: Dict[str, Any], size=(67, 45),
                                details: Optional[Details] = None) -> None:
    """The stem and the first down-sampling of dat_det's trunk against the reference's, with
    the reference's weights, at an odd size (padded for patch convs)."""
    trunk = build_trunk(settings, pretrain_img_size=64)
    reference = DATReference(settings, img_size=64, details=details)
    randomize(reference)
    ours = torch.nn.ModuleDict(dict(patch_proj=trunk.patch_proj, down_projs=trunk.down_projs))
    ours.load_state_dict({k: v for k, v in reference.state_dict().items()
                          if k.startswith(('patch_proj.', 'down_projs.'))})
    torch.manual_seed(5)
    x = torch.randn(2, 3, *size)
    y = torch.randn(2, settings['dims'][0], 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(trunk.patch_proj(trunk.stem_pad(x)), reference.stem(x),
                                   rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(trunk.down_projs[0](trunk.down_pads[0](y)),
                                   reference.down(0, y), rtol=RTOL, atol=ATOL)
