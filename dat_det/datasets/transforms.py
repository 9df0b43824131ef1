"""Data transforms that keep one bad image from crashing a training run (need mmcv/mmdet)."""
from __future__ import annotations

from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS
from mmengine.logging import print_log


@TRANSFORMS.register_module()
class LoadImageOrSkip(LoadImageFromFile):
    """``LoadImageFromFile`` that skips a sample instead of raising when the image file cannot
    be decoded, or when its real size differs from the ``height``/``width`` of the annotation
    file (the boxes would not match it).

    Returning ``None`` makes mmengine's ``BaseDataset`` draw another sample (train datasets
    only). Each skip is logged as a warning with the count of skips so far in this process
    (each data-loader worker counts its own). Grayscale, RGBA and 16-bit images decode to
    8-bit, 3-channel images with the default ``color_type='color'`` (cv2 converts them).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.pop('ignore_empty', None)
        super().__init__(ignore_empty=False, **kwargs)
        self.skipped = 0

    def _skip(self, path: str, reason: str) -> None:
        self.skipped += 1
        print_log(f'skipped training image {path}: {reason} ({self.skipped} skipped so far '
                  'by this loader)', logger='current', level=30)

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path', '?')
        try:
            out = super().transform(results)
        except Exception as err:  # noqa: BLE001 - any decoding failure skips the sample
            detail = ' '.join(str(err).replace(str(path), '').split()).rstrip(': ')
            self._skip(path, f'cannot be decoded ({type(err).__name__}: {detail[:120]})')
            return None
        expected = results.get('height'), results.get('width')
        real = tuple(out['img'].shape[:2])
        if None not in expected and tuple(int(v) for v in expected) != real:
            self._skip(path, f'its size {real[1]}x{real[0]} differs from the annotation file\'s '
                             f'{expected[1]}x{expected[0]}')
            return None
        return out
