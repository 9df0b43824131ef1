"""Convert an official DAT / DAT++ checkpoint (LeapLabTHU/DAT or DAT-Detection) offline.

Usage:
    python tools/model_converters/dat_official2datdet.py SRC DST --arch dat++-t
        [--pretrain-img-size 224] [--arch-options key=value ...] [--partial]

Loads SRC into the ``DAT`` backbone of ``--arch`` as ``init_cfg=dict(type='Pretrained',
checkpoint=SRC)`` does (wrappers stripped, classifier and recomputed buffers dropped,
position tables resized to the backbone's sizes) and writes the tensors that came from SRC as
``{'state_dict': ...}`` under backbone keys. A tensor of SRC that the backbone does not use,
or a backbone weight SRC lacks, stops the conversion with the keys named (the detection
output norms, absent from ImageNet checkpoints, excepted); ``--partial`` writes what fits.
"""
import argparse
import ast

import torch

from dat_det.models.checkpoint import convert_official_checkpoint
from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (.pth, weights under "model")')
    parser.add_argument('dst', help='converted checkpoint (.pth)')
    parser.add_argument('--arch', required=True,
                        help='the DAT preset the weights are for (dat-t/s/b, dat++-t/s/b)')
    parser.add_argument('--pretrain-img-size', type=int, default=224)
    parser.add_argument('--arch-options', nargs='*', default=[],
                        help='architecture overrides as key=python-literal')
    parser.add_argument('--partial', action='store_true',
                        help='write the tensors that fit even if others do not')
    return parser.parse_args()


def parse_arch_options(options) -> dict:
    overrides = {}
    for option in options:
        key, sep, value = option.partition('=')
        if not sep:
            raise UserInputError(f'--arch-options takes key=value, got {option!r}')
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise UserInputError(f'--arch-options {key}: not a Python literal: {value!r}') \
                from err
    return overrides


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        # official checkpoints may pickle training arguments: load only trusted files
        checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
        state_dict, report = convert_official_checkpoint(
            checkpoint, args.arch, args.pretrain_img_size,
            parse_arch_options(args.arch_options), strict=not args.partial,
            hint='pass --partial to write the tensors that fit')
    for line in report.log_lines():
        print(line)
    if report.warning():
        print(f'warning: {report.warning()}')
    torch.save(dict(state_dict=state_dict), args.dst)
    print(f'saved {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
