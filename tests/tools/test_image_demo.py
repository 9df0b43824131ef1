"""dat_det.apis and tools/image_demo.py on the demo model and a tiny DAT++ Mask R-CNN: images,
folders and a generated video in, pictures, JSON and an annotated video out; bad inputs end in
one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
cv2 = pytest.importorskip('cv2')

from tests.helpers import REPO_ROOT  # noqa: E402
from tests.helpers.tiny_configs import TINY_DAT, random_checkpoint  # noqa: E402
from tests.helpers.tool_runs import run_tool  # noqa: E402

DEMO_CONFIG = REPO_ROOT / 'configs' / 'demo' / 'dino-3scale_dat++-pico_shapes.py'
SHAPES = ('circle', 'square', 'triangle', 'star', 'cross')
MASK_RCNN = REPO_ROOT / 'configs' / 'dat' / 'mask-rcnn_dat++-t_fpn_amp-ms-crop-1x_coco.py'


def tiny_mask_rcnn_config(path: Path) -> Path:
    """Mask R-CNN with a DAT++ of 16-128 channels on the shapes classes, every detection
    kept (random weights score low), images tested at 128 px."""
    backbone = dict(TINY_DAT, out_indices=(0, 1, 2, 3))
    backbone.pop('type')
    path.write_text(f"""
_base_ = '{MASK_RCNN}'
model = dict(
    backbone={backbone!r},
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=5),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=5)),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50),
                  rcnn=dict(score_thr=0.0, max_per_img=10)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
test_dataloader = dict(dataset=dict(metainfo=dict(classes={SHAPES!r}), pipeline=test_pipeline))
""")
    return path


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> dict:
    """(config, checkpoint of a freshly built model) of the demo and the tiny Mask R-CNN."""
    root = tmp_path_factory.mktemp('image_demo_models')
    mask_config = tiny_mask_rcnn_config(root / 'mask-rcnn_tiny-dat++.py')
    return {'demo': (DEMO_CONFIG, random_checkpoint(DEMO_CONFIG, root / 'demo.pth')),
            'mask': (mask_config, random_checkpoint(mask_config, root / 'mask.pth', seed=1))}


@pytest.fixture(scope='module')
def video(tmp_path_factory, tiny_shapes_root) -> Path:
    """A 6-frame 96x80 mp4 of the shapes images, written with OpenCV."""
    path = tmp_path_factory.mktemp('video') / 'shapes.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 5.0, (96, 80))
    images = sorted((tiny_shapes_root / 'train').glob('*.jpg'))[:6]
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), (96, 80)))
    writer.release()
    assert path.stat().st_size > 0
    return path


def assert_ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def assert_prediction(pred: dict, num_classes: int = 5, masks: bool = False,
                      shape: tuple | None = None) -> None:
    n = len(pred['scores'])
    assert n > 0 and len(pred['labels']) == n and len(pred['bboxes']) == n
    assert all(0 <= label < num_classes for label in pred['labels'])
    assert all(len(box) == 4 and box[0] <= box[2] and box[1] <= box[3]
               for box in pred['bboxes'])
    assert ('masks' in pred) == masks
    if masks:
        assert len(pred['masks']) == n
        assert all(list(m['size']) == list(shape) and isinstance(m['counts'], str)
                   for m in pred['masks'])


def drawn(picture: np.ndarray, image: np.ndarray) -> float:
    """Fraction of pixels that differ by more than JPEG noise."""
    assert picture.shape == image.shape
    return float((np.abs(picture.astype(int) - image.astype(int)).max(-1) > 60).mean())


def test_tool_on_an_image_with_the_demo_model(tmp_path, models, tiny_shapes_root):
    config, checkpoint = models['demo']
    image = tiny_shapes_root / 'val' / '000001.jpg'
    out = tmp_path / 'out'
    proc = run_tool('image_demo.py', str(image), str(config), '--weights', str(checkpoint),
                    '--out-dir', str(out), '--pred-score-thr', '0', '--device', 'cpu')
    assert_ok(proc)
    assert 'images: 100%' in proc.stderr  # the progress bar
    pred = json.loads((out / 'preds' / '000001.json').read_text())
    assert len(pred['scores']) == 50  # the demo's max_per_img
    assert_prediction(pred)
    picture = cv2.imread(str(out / 'vis' / '000001.jpg'))
    assert drawn(picture, cv2.imread(str(image))) > 0.02


def test_tool_on_a_folder_with_masks(tmp_path, models, tiny_shapes_root):
    config, checkpoint = models['mask']
    out = tmp_path / 'out'
    proc = run_tool('image_demo.py', str(tiny_shapes_root / 'val'), str(config), '--weights',
                    str(checkpoint), '--out-dir', str(out), '--pred-score-thr', '0')
    assert_ok(proc)
    images = sorted((tiny_shapes_root / 'val').glob('*.jpg'))
    assert sorted(p.name for p in (out / 'vis').iterdir()) == [p.name for p in images]
    for image in images:
        pred = json.loads((out / 'preds' / f'{image.stem}.json').read_text())
        original = cv2.imread(str(image))
        assert_prediction(pred, masks=True, shape=original.shape[:2])
        assert drawn(cv2.imread(str(out / 'vis' / image.name)), original) > 0.02


def test_tool_on_a_video(tmp_path, models, video):
    config, checkpoint = models['demo']
    out = tmp_path / 'out'
    proc = run_tool('image_demo.py', str(video), str(config), '--weights', str(checkpoint),
                    '--out-dir', str(out), '--pred-score-thr', '0')
    assert_ok(proc)
    result = json.loads((out / 'preds' / 'shapes.json').read_text())
    assert len(result['frames']) == 6 and result['size'] == [96, 80]
    for pred in result['frames']:
        assert_prediction(pred)
    source, annotated = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out / 'vis' /
                                                                            'shapes.mp4'))
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    frames = 0
    while True:
        ok, frame = annotated.read()
        ok_src, frame_src = source.read()
        if not ok:
            break
        assert ok_src and drawn(frame, frame_src) > 0.02
        frames += 1
    assert frames == 6


def test_api_equals_mmdet_on_paths_and_arrays(models, tiny_shapes_root):
    """dat_det.apis builds the same detector as mmdet's init_detector and gives the same
    predictions for a path and for the BGR array of the same image."""
    import mmcv
    from mmdet.apis import init_detector as mmdet_init_detector

    from dat_det.apis import DetInferencer, inference_detector, init_detector
    from dat_det.utils.checkpoint_files import mmengine_checkpoint_globals

    config, checkpoint = models['demo']
    image = str(tiny_shapes_root / 'val' / '000002.jpg')
    model = init_detector(config, str(checkpoint), device='cpu')
    assert model.dataset_meta['classes'] == SHAPES  # from the config: the checkpoint has none
    from_path = inference_detector(model, image).pred_instances
    from_array = inference_detector(model, mmcv.imread(image)).pred_instances
    with mmengine_checkpoint_globals():
        reference_model = mmdet_init_detector(str(config), str(checkpoint), device='cpu')
    reference = inference_detector(reference_model, image).pred_instances
    for ours in (from_path, from_array):
        torch.testing.assert_close(ours.bboxes, reference.bboxes)
        torch.testing.assert_close(ours.scores, reference.scores)
        assert torch.equal(ours.labels, reference.labels)
    pred = DetInferencer(config, str(checkpoint), device='cpu')(image)['predictions'][0]
    torch.testing.assert_close(torch.tensor(pred['scores']), reference.scores)


def test_init_detector_applies_options_to_model_and_config_and_leaves_no_globals(models):
    """init_detector's model carries ``cfg_options`` in its layers and in ``model.cfg`` (the
    tools read the test pipeline and classes from there), is in eval mode with the
    checkpoint's weights, and registers no mmengine checkpoint types as safe globals beyond
    the load."""
    from mmengine.logging import HistoryBuffer

    from dat_det.apis import init_detector

    config, checkpoint = models['demo']
    options = {'model.test_cfg.max_per_img': 7}
    model = init_detector(config, str(checkpoint), device='cpu', cfg_options=options)
    assert model.cfg.model.test_cfg.max_per_img == model.test_cfg['max_per_img'] == 7
    assert not model.training
    saved = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    state = model.state_dict()
    assert state.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(state[name], value), name
    get_safe_globals = getattr(torch.serialization, 'get_safe_globals', None)
    if get_safe_globals is not None:
        assert HistoryBuffer not in get_safe_globals()


@pytest.mark.parametrize('case', ['missing image', 'unreadable image', 'empty folder',
                                  'unreadable checkpoint', 'missing checkpoint',
                                  'missing video'])
def test_api_reports_bad_inputs(case, tmp_path, models):
    from dat_det.apis import DetInferencer, detect_video
    from dat_det.utils.errors import UserInputError

    config, checkpoint = models['demo']
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    text = tmp_path / 'bad.pth'
    text.write_text('not a checkpoint')
    (tmp_path / 'empty').mkdir()
    expected = {
        'missing image': 'image not found: ', 'unreadable image': 'cannot read image ',
        'empty folder': 'no images (', 'unreadable checkpoint': 'checkpoint .* is unreadable: ',
        'missing checkpoint': 'checkpoint not found: ', 'missing video': 'cannot open video ',
    }[case]
    with pytest.raises(UserInputError, match=expected.replace('(', r'\(')):
        weights = {'unreadable checkpoint': str(text),
                   'missing checkpoint': str(tmp_path / 'none.pth')}.get(case, str(checkpoint))
        inferencer = DetInferencer(config, weights, device='cpu')
        if case == 'missing video':
            detect_video(inferencer, str(tmp_path / 'none.mp4'), str(tmp_path / 'out.mp4'))
        inputs = {'missing image': str(tmp_path / 'none.jpg'), 'unreadable image': str(bad),
                  'empty folder': str(tmp_path / 'empty')}[case]
        inferencer(inputs)


def test_tool_fails_in_one_line(tmp_path, models, tiny_shapes_root):
    """A checkpoint of another model (the other UserInputErrors take the same way out)."""
    config, _ = models['demo']
    proc = run_tool('image_demo.py', str(tiny_shapes_root / 'val' / '000001.jpg'), str(config),
                    '--weights', str(models['mask'][1]), '--out-dir', str(tmp_path / 'out'))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('error: checkpoint ') and \
        "does not fit the config's model: " in lines[-1], proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'out').exists()
