"""Convert a published DAT-Detection (mmdet 2.x) COCO checkpoint for a dat_det config.

Usage:
    python tools/model_converters/dat_detection2datdet.py CONFIG SRC DST

CONFIG is the matching config under configs/dat (see configs/dat/README.md). The model of
CONFIG is built, every tensor of SRC is renamed (dat_det.models.checkpoint.dat_detection) and
loaded strictly: a tensor the model does not use, one it needs that SRC lacks, or a shape
that differs stops the conversion with one line naming the keys. DST then holds exactly the
model's state dict and evaluates with ``tools/test.py CONFIG DST`` or initialises training
with ``load_from = DST``.
"""
import argparse

import torch

from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='dat_det config of the checkpoint (configs/dat/...)')
    parser.add_argument('src', help='DAT-Detection checkpoint (.pth)')
    parser.add_argument('dst', help='converted checkpoint (.pth)')
    return parser.parse_args()


def build_model(config: str) -> torch.nn.Module:
    """The detector of ``config`` with random weights (no pretrained backbone is read)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dat_det.utils.config import load_config

    register_all_modules()
    cfg = load_config(config)
    if isinstance(cfg.model.get('backbone'), dict):
        cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model)


def convert(config: str, src: str, dst: str) -> None:
    from dat_det.models.checkpoint import checkpoint_classes, load_dat_detection

    try:
        # mmdet 2.x checkpoints pickle their meta: load only trusted files
        checkpoint = torch.load(src, map_location='cpu', weights_only=False)
    except FileNotFoundError as err:
        raise UserInputError(f'checkpoint not found: {src}') from err
    model = build_model(config)
    state_dict = load_dat_detection(model, checkpoint, source=src)
    meta = {}
    classes = checkpoint_classes(checkpoint)
    if classes is not None:
        meta['dataset_meta'] = dict(classes=classes)
    torch.save(dict(meta=meta, state_dict=state_dict), dst)
    print(f'{len(state_dict)} tensors of {src} match {config}; saved to {dst}')


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        convert(args.config, args.src, args.dst)


if __name__ == '__main__':
    main()
