"""Tile the first N images of a folder into one picture.

    python tools/misc/tile_images.py FOLDER OUT.png [--num 6] [--cols 2]
"""
import argparse
import math
import sys
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


def tile(paths: list, cols: int, pad: int = 4) -> Image.Image:
    """Paste ``paths`` row by row into one white canvas, each cell as large as the largest."""
    images = [Image.open(p).convert('RGB') for p in paths]
    cell_w = max(i.width for i in images) + pad
    cell_h = max(i.height for i in images) + pad
    rows = math.ceil(len(images) / cols)
    canvas = Image.new('RGB', (cols * cell_w, rows * cell_h), 'white')
    for k, img in enumerate(images):
        canvas.paste(img, ((k % cols) * cell_w, (k // cols) * cell_h))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder')
    parser.add_argument('out')
    parser.add_argument('--num', type=int, default=6)
    parser.add_argument('--cols', type=int, default=2)
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.folder).rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        sys.exit(f'error: no images in {args.folder}')
    tile(paths[:args.num], args.cols).save(args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
