"""Write the images of a dataset after its training pipeline, with ground-truth boxes and
masks, to a folder of PNGs.

    python tools/analysis_tools/browse_dataset.py CONFIG [--output-dir browse]
        [--split train|val|test] [--num 20] [--cfg-options k=v ...]
"""
import argparse
import os

from mmdet.registry import DATASETS, VISUALIZERS
from mmdet.utils import register_all_modules
from mmengine.config import DictAction

from dat_det.utils.config import load_config
from dat_det.utils.data_check import check_dataloader_datasets
from dat_det.utils.errors import UserInputError, exit_on_user_error
from dat_det.visualization.dataset_browser import browse_dataset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Browse a dataset after its pipeline')
    parser.add_argument('config')
    parser.add_argument('--output-dir', default='browse')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train')
    parser.add_argument('--num', type=int, help='images to write (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules()
    with exit_on_user_error():
        if args.num is not None and args.num < 1:
            raise UserInputError(f'--num must be >= 1, got {args.num}')
        cfg = load_config(args.config, args.cfg_options)
        check_dataloader_datasets(cfg, (args.split, ))
        dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    os.makedirs(args.output_dir, exist_ok=True)
    count = browse_dataset(dataset, visualizer, args.output_dir, args.num)
    print(f'wrote {count} images to {args.output_dir}')


if __name__ == '__main__':
    main()
