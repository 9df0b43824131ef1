"""Images after a dataset's pipeline with their ground truth (boxes, masks), to PNG files."""
import os.path as osp
from typing import Any, Optional

from mmdet.structures.bbox import BaseBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from tqdm import tqdm


def _drawable(sample: Any) -> Any:
    """Ground truth as the visualizer draws it: box tensors and boolean mask arrays."""
    gt = sample.gt_instances
    if isinstance(gt.get('bboxes'), BaseBoxes):
        gt.bboxes = gt.bboxes.tensor
    if isinstance(gt.get('masks'), (BitmapMasks, PolygonMasks)):
        gt.masks = gt.masks.to_ndarray().astype(bool)
    return sample.numpy()


def browse_dataset(dataset: Any, visualizer: Any, out_dir: str,
                   num: Optional[int] = None) -> int:
    """Draw the first ``num`` (default all) items of ``dataset`` to ``out_dir``.

    Args:
        dataset: an mmdet dataset whose pipeline ends in ``PackDetInputs``.
        visualizer: a ``DetLocalVisualizer`` with the dataset's meta.

    Returns:
        The number of PNGs written.
    """
    count = len(dataset) if num is None else min(num, len(dataset))
    for index in tqdm(range(count), desc='browse', unit='img'):
        item = dataset[index]
        sample = _drawable(item['data_samples'])
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
        name = osp.splitext(osp.basename(sample.img_path))[0]
        visualizer.add_datasample(name, image, data_sample=sample, draw_pred=False,
                                  show=False, out_file=osp.join(out_dir, f'{name}.png'))
    return count
