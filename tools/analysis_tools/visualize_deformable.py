"""Draw where a detector's deformable attention looks on one image.

    python tools/analysis_tools/visualize_deformable.py CONFIG CHECKPOINT IMAGE
        [--out-dir vis_deformable] [--stage S] [--block B] [--dattention NAME] [--top-k 5]
        [--layer -1] [--encoder-points X Y [X Y ...]] [--encoder-level 0] [--cfg-options k=v ...]

Writes PNGs named after the image:

- ``*_dat_stageS_blockB.png`` (DAT backbone): the reference grid and the deformed key
  positions of each offset group of one deformable block (default: the last one of the last
  stage that has one);
- ``*_dattention_<block>.png`` (a CNN detector with plug-in DAttention blocks, e.g. the
  configs of ``configs/dattention/``): the reference grid and deformed key positions of each
  group of every block (of one with ``--dattention``: its module name, e.g.
  ``dattention.backbone_stage4_1__input`` or ``backbone.layer3.0.dattention``, or its site,
  e.g. ``'before backbone.stage4.1'``);
- ``*_decoder.png`` (Deformable DETR, DINO): the sampling points of the top ``--top-k``
  detections' decoder queries in ``--layer``, one panel per level and one of all, coloured by
  attention weight, with the boxes;
- ``*_encoder.png`` with ``--encoder-points``: the same for the encoder queries under
  those original-image pixels on ``--encoder-level``.
"""
import argparse
import os
import os.path as osp

import mmcv
from mmengine.config import DictAction

from dat_det.apis import init_detector, prepare_image
from dat_det.utils.errors import UserInputError, exit_on_user_error
from dat_det.visualization import deformable_pictures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw deformable attention sampling points')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out-dir', default='vis_deformable')
    parser.add_argument('--stage', type=int, help='DAT stage (default: last deformable)')
    parser.add_argument('--block', type=int, help='DAT block of the stage')
    parser.add_argument('--dattention', metavar='NAME',
                        help='DAttention block to draw (module name or site; default: all)')
    parser.add_argument('--top-k', type=int, default=5, help='detections to draw')
    parser.add_argument('--layer', type=int, default=-1, help='decoder/encoder layer')
    parser.add_argument('--encoder-points', type=float, nargs='+', metavar='X Y',
                        help='original-image pixels whose encoder queries are drawn')
    parser.add_argument('--encoder-level', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys')
    return parser.parse_args()


def class_names(model) -> list:
    """The dataset's classes from the model's config, else those the checkpoint carries."""
    metainfo = model.cfg.test_dataloader.dataset.get('metainfo') or {}
    return metainfo.get('classes') or (model.dataset_meta or {}).get('classes')


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        points = args.encoder_points or []
        if len(points) % 2:
            raise UserInputError('--encoder-points takes X Y pairs')
        if args.top_k < 1:
            raise UserInputError(f'--top-k must be >= 1, got {args.top_k}')
        model = init_detector(args.config, args.checkpoint, device='cpu',
                              cfg_options=args.cfg_options)
        inputs, samples = prepare_image(model, args.image)
        image = mmcv.imread(args.image, channel_order='rgb')
        try:
            pictures = deformable_pictures(
                model, inputs, samples, image, stage=args.stage, block=args.block,
                dattention=args.dattention, top_k=args.top_k, layer=args.layer,
                encoder_points=list(zip(points[0::2], points[1::2])),
                encoder_level=args.encoder_level,
                class_names=class_names(model))
        except (ValueError, IndexError) as err:
            raise UserInputError(str(err)) from err
    os.makedirs(args.out_dir, exist_ok=True)
    stem = osp.splitext(osp.basename(args.image))[0]
    for picture in pictures:
        path = osp.join(args.out_dir, f'{stem}_{picture.name}.png')
        picture.figure.savefig(path, dpi=100)
        print(f'wrote {path} ({len(picture.points)} points)')


if __name__ == '__main__':
    main()
