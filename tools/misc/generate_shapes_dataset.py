"""Generate the embedded demo dataset (rendered shapes, COCO format).

    python tools/misc/generate_shapes_dataset.py [--out data/shapes] [--if-missing]
"""
import argparse
import sys
import time

from dat_det.datasets import ShapesConfig, generate_shapes_dataset, shapes_dataset_exists


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/shapes', help='output folder')
    parser.add_argument('--num-train', type=int, default=ShapesConfig.num_train)
    parser.add_argument('--num-val', type=int, default=ShapesConfig.num_val)
    parser.add_argument('--min-size', type=int, default=ShapesConfig.min_size)
    parser.add_argument('--max-size', type=int, default=ShapesConfig.max_size)
    parser.add_argument('--seed', type=int, default=ShapesConfig.seed)
    parser.add_argument('--if-missing', action='store_true',
                        help='do nothing when the dataset already exists')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.if_missing and shapes_dataset_exists(args.out):
        print(f'shapes dataset already at {args.out}')
        return
    if args.min_size > args.max_size or args.min_size < 32:
        sys.exit('error: need 32 <= --min-size <= --max-size')
    cfg = ShapesConfig(num_train=args.num_train, num_val=args.num_val, min_size=args.min_size,
                       max_size=args.max_size, seed=args.seed)
    start = time.time()
    counts = generate_shapes_dataset(args.out, cfg, progress=True)
    print(f'wrote {counts} images to {args.out} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
