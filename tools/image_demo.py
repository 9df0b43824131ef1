"""Run a detector on an image, a folder of images or a video and draw what it finds.

    python tools/image_demo.py INPUTS CONFIG --weights CKPT [--out-dir outputs]
        [--pred-score-thr 0.3] [--device cpu|cuda:0] [--cfg-options k=v ...]

INPUTS is an image file, a folder (its images, not recursive) or a video file (.mp4, .avi,
.mov, .mkv, ...). Writes ``OUT_DIR/vis/NAME`` (detections scoring at least
``--pred-score-thr`` drawn: boxes, class names, scores, masks when the model predicts them)
and ``OUT_DIR/preds/STEM.json`` (every prediction: labels, scores, xyxy boxes in pixels, RLE
masks), as mmdet's ``DetInferencer`` does; a video gives ``OUT_DIR/vis/STEM.mp4`` and one
JSON with the predictions of every frame.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import DictAction
from tqdm import tqdm

from dat_det.apis import DetInferencer, detect_video, is_video
from dat_det.utils.errors import UserInputError, exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Detect objects in images or a video')
    parser.add_argument('inputs', help='an image, a folder of images or a video file')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--weights', required=True, help='checkpoint file')
    parser.add_argument('--out-dir', default='outputs', help='where pictures and JSON go')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='lowest score of a drawn detection')
    parser.add_argument('--device', default=None,
                        help='e.g. cpu or cuda:0 (default: CUDA when available)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override existing config keys')
    return parser.parse_args()


def run_images(inferencer: DetInferencer, inputs: str, args: argparse.Namespace) -> int:
    """Draw and save each image's detections; returns the number of images."""
    images = inferencer.list_inputs(inputs)
    for image in tqdm(images, desc='images', unit='img'):
        inferencer(image, out_dir=args.out_dir, pred_score_thr=args.pred_score_thr,
                   no_save_pred=False)
    return len(images)


def run_video(inferencer: DetInferencer, video: str, args: argparse.Namespace) -> str:
    """Write the annotated video and its predictions; returns the video's path."""
    stem = osp.splitext(osp.basename(video))[0]
    dst = osp.join(args.out_dir, 'vis', f'{stem}.mp4')
    result = detect_video(inferencer, video, dst, args.pred_score_thr, progress=True)
    os.makedirs(osp.join(args.out_dir, 'preds'), exist_ok=True)
    with open(osp.join(args.out_dir, 'preds', f'{stem}.json'), 'w') as f:
        json.dump(result, f)
    return dst


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        if not osp.exists(args.inputs):
            raise UserInputError(f'input not found: {args.inputs}')
        if not 0.0 <= args.pred_score_thr <= 1.0:
            raise UserInputError(f'--pred-score-thr must lie in [0, 1], got {args.pred_score_thr}')
        inferencer = DetInferencer(args.config, args.weights, device=args.device,
                                   cfg_options=args.cfg_options)
        if osp.isfile(args.inputs) and is_video(args.inputs):
            dst = run_video(inferencer, args.inputs, args)
            print(f'wrote {dst} and its predictions in {osp.join(args.out_dir, "preds")}')
        else:
            count = run_images(inferencer, args.inputs, args)
            print(f'wrote {count} picture(s) to {osp.join(args.out_dir, "vis")} and their '
                  f'predictions to {osp.join(args.out_dir, "preds")}')


if __name__ == '__main__':
    main()
