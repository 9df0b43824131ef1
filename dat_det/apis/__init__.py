"""Run a trained detector on images and videos, thin over mmdet's inference APIs.

    from dat_det.apis import inference_detector, init_detector
    model = init_detector(CONFIG, CHECKPOINT, device='cpu')
    result = inference_detector(model, 'image.jpg')  # or an (H, W, 3) BGR array, or a list
    result.pred_instances  # bboxes (N, 4) xyxy in image pixels, scores (N,), labels (N,)

``DetInferencer`` (mmdet's, with dat_det's checks) also draws the detections and writes JSON;
``detect_video`` runs it on every frame of a video. Missing files, unreadable images and
checkpoints that do not fit the config raise ``dat_det.utils.errors.UserInputError``.
``prepare_image`` (an image file) and ``preprocess`` (a data batch) give the tools that look
inside a model its input tensors.
"""
from mmdet.apis import inference_detector

from .image_inputs import prepare_image, preprocess
from .inference import DetInferencer, check_checkpoint_fits, init_detector
from .video import detect_video, is_video

__all__ = ['DetInferencer', 'check_checkpoint_fits', 'detect_video', 'inference_detector',
           'init_detector', 'is_video', 'prepare_image', 'preprocess']
