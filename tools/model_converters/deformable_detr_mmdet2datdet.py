"""Convert Deformable DETR and DINO checkpoints between mmdet 3.x and dat_det.

Usage:
    python tools/model_converters/deformable_detr_mmdet2datdet.py SRC DST [--to-mmdet]

mmdet's ``DeformableDETR`` / ``DINO`` and dat_det's ``MSDADeformableDETR`` / ``MSDADINO``
share every parameter except the names inside the encoder/decoder layers; a converted
checkpoint gives the same outputs with the same config (only ``model.type`` differs).
"""
import argparse

import torch

from dat_det.models.checkpoint import from_mmdet, to_mmdet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint (.pth)')
    parser.add_argument('dst', help='converted checkpoint (.pth)')
    parser.add_argument('--to-mmdet', action='store_true',
                        help='convert a dat_det checkpoint to mmdet instead')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # mmengine checkpoints carry config objects in their meta: load only trusted files
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    state_dict = checkpoint.get('state_dict', checkpoint)
    convert = to_mmdet if args.to_mmdet else from_mmdet
    converted = dict(state_dict=convert(state_dict))
    if 'meta' in checkpoint:
        converted['meta'] = checkpoint['meta']
    torch.save(converted, args.dst)
    renamed = sum(a != b for a, b in zip(state_dict, converted['state_dict']))
    print(f'{len(state_dict)} tensors, {renamed} renamed -> {args.dst}')


if __name__ == '__main__':
    main()
