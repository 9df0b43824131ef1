"""Convert an official Deformable-DETR checkpoint (fundamentalvision/Deformable-DETR).

Usage:
    python tools/model_converters/deformable_detr_official2datdet.py SRC DST \
        [--keep-all-classes] [--num-backbone-levels N]

The official model predicts the 91 COCO category ids; by default the classifier rows of the
80 COCO classes are kept, in mmdet's label order. The official ``input_proj`` convolutions
have biases: build the neck with ``bias=True`` to load them, e.g.
``--cfg-options model.neck.bias=True``. The result loads into the matching config under
``configs/deformable_detr/`` (``deformable-detr*_r50_16xb2-50e_coco.py``).
"""
import argparse

import torch

from dat_det.models.checkpoint import from_official


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (.pth, with a "model" entry)')
    parser.add_argument('dst', help='converted checkpoint (.pth)')
    parser.add_argument('--keep-all-classes', action='store_true',
                        help='keep all classifier rows instead of the 80 COCO classes')
    parser.add_argument('--num-backbone-levels', type=int, default=None,
                        help='input_proj entries fed by the backbone (default: the 1x1 convs)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # official checkpoints pickle their argparse arguments: load only trusted files
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    state_dict = checkpoint.get('model', checkpoint)
    kwargs = dict(num_backbone_levels=args.num_backbone_levels)
    if args.keep_all_classes:
        kwargs['class_ids'] = None
    converted = from_official(state_dict, **kwargs)
    torch.save(dict(state_dict=converted), args.dst)
    print(f'{len(state_dict)} official tensors -> {len(converted)} tensors in {args.dst}')


if __name__ == '__main__':
    main()
