"""Convert an official DAT / DAT++ checkpoint (LeapLabTHU/DAT or DAT-Detection) offline.

Usage:
    python tools/model_converters/dat_official2datdet.py SRC DST [--arch dat++-t]
        [--pretrain-img-size 224] [--arch-options key=value ...]

Strips ``module.``/``backbone.``, drops the classifier and recomputed buffers, and writes
``{'state_dict': ...}`` with backbone keys, loadable through
``init_cfg=dict(type='Pretrained', checkpoint=DST)``. With ``--arch`` the weights are also
loaded into that backbone: position-bias tables are resized to its sizes and the missing /
unexpected keys are printed. (Loading SRC directly through ``init_cfg`` does the same.)
"""
import argparse
import ast

import torch

from dat_det.models.checkpoint import (
    convert_official_dat_keys,
    extract_state_dict,
    load_official_dat,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (.pth, weights under "model")')
    parser.add_argument('dst', help='converted checkpoint (.pth)')
    parser.add_argument('--arch', default=None,
                        help='check against (and resize tables for) this DAT preset')
    parser.add_argument('--pretrain-img-size', type=int, default=224)
    parser.add_argument('--arch-options', nargs='*', default=[],
                        help='architecture overrides as key=python-literal')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # official checkpoints may pickle training arguments: load only trusted files
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    state_dict = convert_official_dat_keys(extract_state_dict(checkpoint))
    if args.arch is not None:
        from dat_det.models.backbones import DAT
        overrides = {}
        for option in args.arch_options:
            key, value = option.split('=', 1)
            overrides[key] = ast.literal_eval(value)
        model = DAT(arch=args.arch, pretrain_img_size=args.pretrain_img_size, **overrides)
        report = load_official_dat(model, state_dict)
        print(report.message())
        state_dict = model.state_dict()
    torch.save(dict(state_dict=state_dict), args.dst)
    print(f'saved {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
