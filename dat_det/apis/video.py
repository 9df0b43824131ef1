"""A detector on every frame of a video: an annotated video and the per-frame predictions."""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Dict, List

import cv2
import mmcv
from tqdm import tqdm

from dat_det.utils.errors import UserInputError

from .inference import DetInferencer

VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv')


def is_video(path: str) -> bool:
    """Whether ``path`` names a video file (by its suffix)."""
    return osp.splitext(path)[1].lower() in VIDEO_SUFFIXES


def detect_video(inferencer: DetInferencer, src: str, dst: str, pred_score_thr: float = 0.3,
                 progress: bool = False) -> Dict[str, Any]:
    """Run ``inferencer`` on each frame of the video ``src`` and write the frames with their
    detections drawn (those scoring at least ``pred_score_thr``) to ``dst`` (mp4v, same
    size and frame rate).

    Returns:
        ``dict(video=src, fps, size=(w, h), frames=[...])`` with, per frame, the predictions
        as ``DetInferencer`` gives them (labels, scores, bboxes and RLE masks if any; all of
        them, not only those drawn).

    Raises:
        UserInputError: the video cannot be opened, has no frames, or ``dst`` cannot be
            written.
    """
    capture = cv2.VideoCapture(src)
    if not osp.isfile(src) or not capture.isOpened():
        raise UserInputError(f'cannot open video {src}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
    if not writer.isOpened():
        capture.release()
        raise UserInputError(f'cannot write video {dst}')
    frames: List[Dict[str, Any]] = []
    bar = tqdm(total=total, desc=osp.basename(src), unit='frame', disable=not progress)
    try:
        while True:
            ok, frame = capture.read()  # BGR, as the test pipeline expects arrays
            if not ok:
                break
            sample = inferencer(frame, return_datasamples=True)['predictions'][0]
            # The visualizer draws on RGB images (as DetInferencer does for files).
            inferencer.visualizer.add_datasample(
                'frame', mmcv.bgr2rgb(frame), sample, draw_gt=False,
                pred_score_thr=pred_score_thr)
            writer.write(mmcv.rgb2bgr(inferencer.visualizer.get_image()))
            frames.append(inferencer.pred2dict(sample))
            bar.update()
    finally:
        bar.close()
        capture.release()
        writer.release()
    if not frames:
        os.remove(dst)
        raise UserInputError(f'no frames could be read from video {src}')
    return dict(video=src, fps=fps, size=list(size), frames=frames)
