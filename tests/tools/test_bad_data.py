"""Bad data in a COCO dataset: every case either trains (handled or skipped, and counted in the
log) or is refused before training in one line; none crashes a run midway."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dat_det.datasets import SHAPE_CLASSES
from dat_det.utils.data_check import check_coco_dataset
from dat_det.utils.errors import UserInputError
from tests.helpers.demo_training import FCOS_DEMO_CONFIG, data_options
from tests.helpers.forked_runs import run_forked


def _load(root: Path, split: str) -> dict:
    return json.loads((root / 'annotations' / f'instances_{split}.json').read_text())


def _save(root: Path, split: str, coco: dict) -> None:
    (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))


def _as_png(root: Path, coco: dict, index: int, convert) -> str:
    """Rewrite train image ``index`` as a PNG made by ``convert(rgb array)``; its file name."""
    img = coco['images'][index]
    rgb = np.asarray(Image.open(root / 'train' / img['file_name']).convert('RGB'))
    name = img['file_name'].replace('.jpg', '.png')
    convert(rgb).save(root / 'train' / name)
    (root / 'train' / img['file_name']).unlink()
    img['file_name'] = name
    return name


def make_bad_train_split(root: Path) -> dict[str, str]:
    """Break the train split of a copy of the shapes data in every way the issue lists."""
    coco = _load(root, 'train')
    images, anns = coco['images'], coco['annotations']
    corrupt = root / 'train' / images[0]['file_name']
    corrupt.write_bytes(b'\x00garbage, not an image' * 50)
    resized = images[1]
    Image.open(root / 'train' / resized['file_name']).resize(
        (resized['width'] + 7, resized['height'])).save(root / 'train' / resized['file_name'])
    png16 = _as_png(root, coco, 4, lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257))
    assert Image.open(root / 'train' / png16).mode.startswith('I;16')
    _as_png(root, coco, 2, lambda a: Image.fromarray(a).convert('L'))
    _as_png(root, coco, 3, lambda a: Image.fromarray(a).convert('RGBA'))
    on_5 = [a for a in anns if a['image_id'] == images[5]['id']]
    on_5[0]['bbox'][2], on_5[0]['area'] = 0, 0                      # zero width
    if len(on_5) > 1:
        on_5[1]['bbox'][2:] = [-10, -10]                             # negative size
        on_5[1]['area'] = -100
    on_6 = [a for a in anns if a['image_id'] == images[6]['id']]
    on_6[0]['bbox'][:2] = [images[6]['width'] + 5, images[6]['height'] + 5]  # outside its image
    on_6[-1]['category_id'] = 99                                          # no such category
    coco['annotations'] = [a for a in anns if a['image_id'] != images[7]['id']]  # no anns
    _save(root, 'train', coco)
    return dict(corrupt=str(corrupt), resized=str(root / 'train' / resized['file_name']),
                outside=f"annotation {on_6[0]['id']} ({images[6]['file_name']})",
                category=f"annotation {on_6[-1]['id']} ({images[6]['file_name']}, "
                         'category_id 99)')


@pytest.fixture()
def shapes_copy(tmp_path, tiny_shapes_root) -> Path:
    root = tmp_path / 'shapes'
    shutil.copytree(tiny_shapes_root, root)
    return root


def test_training_survives_bad_train_images_and_boxes(tmp_path, shapes_copy):
    bad = make_bad_train_split(shapes_copy)
    proc = run_forked('train.py', FCOS_DEMO_CONFIG, '--work-dir', str(tmp_path / 'work'),
                      '--cfg-options', *data_options(shapes_copy), 'train_cfg.max_epochs=2',
                      'train_cfg.val_interval=2', log=tmp_path / 'train.log')
    log = proc.output
    assert proc.returncode == 0, log[-4000:]
    assert f'skipped training image {bad["corrupt"]}: cannot be decoded' in log, log[-4000:]
    assert f'skipped training image {bad["resized"]}: its size' in log, log[-4000:]
    note = next(line for line in log.splitlines() if 'train data ' in line)
    for part in ('boxes with zero or negative size are ignored: annotation ',
                 f'1 boxes entirely outside their image are ignored: {bad["outside"]}',
                 '1 annotations whose category_id is not a category of the file are ignored: '
                 f'{bad["category"]}',
                 '1 images without annotations are skipped'):
        assert part in note, note
    assert (tmp_path / 'work' / 'epoch_2.pth').is_file()
    assert 'Epoch(val) [2][1/1]' in log
    skipped = {line.split('skipped training image ')[1].split(':')[0]
               for line in log.splitlines() if 'skipped training image ' in line}
    assert skipped == {bad['corrupt'], bad['resized']}  # gray, RGBA, 16-bit PNG all trained


def test_each_dropped_annotation_is_counted_and_named(shapes_copy):
    """A box outside its image, a box of negative size, a category id the file does not
    define, and one the config's classes leave out: mmdet drops each; the note names each."""
    from mmengine.config import Config

    from dat_det.utils.data_check import check_dataloader_datasets

    coco = _load(shapes_copy, 'train')
    images = {img['id']: img for img in coco['images']}
    anns = coco['annotations']
    image_of = [images[a['image_id']] for a in anns[:4]]
    anns[0]['bbox'][:2] = [image_of[0]['width'] + 1, 0]
    anns[1]['bbox'][2:], anns[1]['area'] = [-4, 6], -24
    anns[2]['category_id'] = 7
    anns[3]['category_id'] = next(c['id'] for c in coco['categories'] if c['name'] == 'cross')
    _save(shapes_copy, 'train', coco)
    dataset = dict(type='CocoDataset', data_root=f'{shapes_copy}/', data_prefix=dict(img='train/'),
                   ann_file='annotations/instances_train.json',
                   metainfo=dict(classes=('circle', 'square', 'triangle', 'star')))
    (note, ) = check_dataloader_datasets(Config(dict(train_dataloader=dict(dataset=dataset))),
                                         ('train', ))

    def named(i: int, extra: str = '') -> str:
        return f"annotation {anns[i]['id']} ({image_of[i]['file_name']}{extra})"

    assert f'1 boxes entirely outside their image are ignored: {named(0)}' in note
    assert f'1 boxes with zero or negative size are ignored: {named(1)}' in note
    assert ('1 annotations whose category_id is not a category of the file are ignored: '
            f"{named(2, ', category_id 7')}") in note
    crosses = [a for a in anns[4:] if a['category_id'] == anns[3]['category_id']]
    cross = named(3, ", 'cross'")
    assert (f"{1 + len(crosses)} annotations of categories outside the dataset's classes are "
            f'ignored: {cross}') in note, note


def _val_cfg(root: Path) -> dict:
    return dict(data_root=f'{root}/', ann_file='annotations/instances_val.json',
                data_prefix=dict(img='val/'), test_mode=True)


def test_unreadable_val_image_is_refused_in_one_line(shapes_copy):
    coco = _load(shapes_copy, 'val')
    path = shapes_copy / 'val' / coco['images'][1]['file_name']
    path.write_bytes(b'not an image')
    with pytest.raises(UserInputError, match=f'val image {path} cannot be read'):
        check_coco_dataset(_val_cfg(shapes_copy), 'val')


def test_val_image_size_differs_from_json_is_refused(shapes_copy):
    coco = _load(shapes_copy, 'val')
    img = coco['images'][2]
    path = shapes_copy / 'val' / img['file_name']
    Image.open(path).resize((img['width'], img['height'] + 3)).save(path)
    with pytest.raises(UserInputError, match=f"is {img['width']}x{img['height'] + 3} but the "):
        check_coco_dataset(_val_cfg(shapes_copy), 'val')


@pytest.mark.parametrize('bbox, message', [
    ([1, 2, 3], 'not four finite numbers'),
    ([1, 2, float('nan'), 4], 'not four finite numbers'),
    (None, 'not four finite numbers'),
])
def test_malformed_box_is_refused(shapes_copy, bbox, message):
    coco = _load(shapes_copy, 'val')
    coco['annotations'][0]['bbox'] = bbox
    _save(shapes_copy, 'val', coco)
    with pytest.raises(UserInputError, match=message):
        check_coco_dataset(_val_cfg(shapes_copy), 'val')


def test_checks_and_guards_reach_datasets_inside_wrappers(shapes_copy):
    """ConcatDataset / RepeatDataset wrappers: the data check reaches every wrapped COCO
    dataset and the train guard every wrapped pipeline."""
    from mmengine.config import Config

    from dat_det.engine.train_guards import skip_unreadable_train_images
    from dat_det.utils.data_check import check_dataloader_datasets

    def coco(ann_file: str) -> dict:
        return dict(type='CocoDataset', data_root=f'{shapes_copy}/', ann_file=ann_file,
                    data_prefix=dict(img='train/'), metainfo=dict(classes=SHAPE_CLASSES),
                    pipeline=[dict(type='LoadImageFromFile'), dict(type='PackDetInputs')])

    good = 'annotations/instances_train.json'
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='ConcatDataset', datasets=[
            coco(good), dict(type='RepeatDataset', times=2, dataset=coco('nope.json'))]))))
    with pytest.raises(UserInputError, match='train annotation file not found: .*nope.json'):
        check_dataloader_datasets(cfg, ('train', ))
    skip_unreadable_train_images(cfg)
    wrapped = cfg.train_dataloader.dataset.datasets
    assert [d.pipeline[0].type for d in (wrapped[0], wrapped[1].dataset)] == [
        'LoadImageOrSkip', 'LoadImageOrSkip']
    wrapped[1].dataset.ann_file = good
    assert check_dataloader_datasets(cfg, ('train', )) == []
