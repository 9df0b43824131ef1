"""Export Deformable DETR, DINO or a dense one-stage detector (RTMDet, YOLOX, ..., also with
DAttention blocks), or a detector's backbone (e.g. DAT), to ONNX and check it.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT [--out model.onnx]
        [--part detector|backbone] [--image IMG | --shape H W] [--check-shape H W]
        [--opset 17] [--atol 1e-3] [--cfg-options k=v ...]

The graph takes a normalized image ``image (1, 3, height, width)`` (dynamic height and width)
and returns, for ``--part detector`` (``MSDADeformableDETR`` or ``MSDADINO``), the last
decoder layer's class logits ``scores (1, queries, classes)`` and boxes ``boxes (1, queries, 4)`` as
normalized (cx, cy, w, h); for ``--part detector`` of a one-stage detector (mmdet's
``SingleStageDetector``: RTMDet, YOLOX, RetinaNet, ..., and their ``WithDAttention`` variants
of ``configs/dattention/``) the head's raw outputs ``output{k}_level{l}`` (kind ``k``, e.g.
class scores and box regressions, of level ``l``; decoding and NMS are left out); for
``--part backbone`` the backbone's feature maps. Multi-scale deformable attention is exported
through the exact reference of the op; DAT backbones and DAttention blocks sample with
``grid_sample`` (ONNX ``GridSample``, opset >= 16). The
graph is checked with ``onnx.checker``, then run with onnxruntime on CPU at the export size
and at ``--check-shape`` (default: a second, different size), and compared with PyTorch;
the exit status is 1 when a difference exceeds ``--atol``.

Every padding of a DAT backbone (stem, down-sampling, windows, a stage map smaller than its
neighbourhood-attention kernel) is computed from the traced input size, so the graph holds at
sizes other than the export size (``tests/tools/test_onnx_export.py`` checks sizes that need
each padding).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

from dat_det.apis import init_detector, prepare_image
from dat_det.deployment import (
    DeformableDETRForExport,
    DenseDetectorForExport,
    compare_with_onnxruntime,
    detector_outputs,
    export_onnx,
)
from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export to ONNX and compare with PyTorch')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', default='model.onnx', help='output .onnx file')
    parser.add_argument('--part', choices=['detector', 'backbone'], default='detector')
    parser.add_argument('--image', help='export with this image (test pipeline applied)')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 640], metavar=('H', 'W'),
                        help='random export input of this size (without --image)')
    parser.add_argument('--check-shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='second size run by onnxruntime (default: 5/4 of the export size)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest accepted |onnxruntime - PyTorch|')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys')
    return parser.parse_args()


def export_target(model, part: str):
    """(module to export, PyTorch reference callable, output names)."""
    from mmdet.models.detectors import SingleStageDetector

    if part == 'backbone':
        backbone = model.backbone
        with torch.no_grad():
            num_outs = len(backbone(torch.zeros(1, 3, 64, 64)))
        return backbone, backbone, [f'feat{i}' for i in range(num_outs)]
    if isinstance(model, SingleStageDetector):  # not the DETR family
        dense = DenseDetectorForExport(model).eval()
        return dense, dense, dense.output_names(torch.zeros(1, 3, 64, 64))
    if type(model).__name__ not in ('MSDADeformableDETR', 'MSDADINO'):
        raise UserInputError(f'--part detector exports MSDADeformableDETR, MSDADINO and '
                             f'one-stage detectors, the config builds '
                             f'{type(model).__name__}; use --part backbone')
    return (DeformableDETRForExport(model).eval(),
            lambda image: detector_outputs(model, image), ['scores', 'boxes'])


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        if args.opset < 16:
            raise UserInputError(f'--opset {args.opset} has no GridSample; use >= 16')
        if not osp.isdir(osp.dirname(osp.abspath(args.out))):
            raise UserInputError(f'output folder not found: {osp.dirname(args.out)}')
        model = init_detector(args.config, args.checkpoint, device='cpu',
                              cfg_options=args.cfg_options)
        if args.image:
            image = prepare_image(model, args.image)[0]
        else:
            image = torch.randn(1, 3, *args.shape, generator=torch.Generator().manual_seed(0))
        module, reference, names = export_target(model, args.part)
    height, width = image.shape[-2:]
    check = args.check_shape or [height * 5 // 4, width * 5 // 4]
    second = torch.randn(1, 3, *check, generator=torch.Generator().manual_seed(1))

    export_onnx(module, image, args.out, names, args.opset)
    print(f'exported {args.part} to {args.out} (opset {args.opset}, graph checked)')
    worst = 0.0
    for img, diffs in zip((image, second),
                          compare_with_onnxruntime(args.out, reference, (image, second))):
        text = ', '.join(f'{name} {diff:.2e}' for name, diff in diffs.items())
        print(f'onnxruntime vs PyTorch at {tuple(img.shape[-2:])}: max |diff| {text}')
        worst = max(worst, *diffs.values())
    if worst > args.atol:
        print(f'error: onnxruntime differs from PyTorch by {worst:.2e} > --atol {args.atol}',
              file=sys.stderr)
        sys.exit(1)
    print(f'outputs match within {args.atol}')


if __name__ == '__main__':
    main()
