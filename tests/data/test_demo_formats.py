"""The demo datasets on disk: determinism, caching, and that the real COCO / ADE20K / ImageFolder readers parse them."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from linattn_vision.data import (DEMO_CLASSES, DEMO_SEG_CLASSES, DEMO_WNIDS, ade_label_map, make_demo_data,
                                 mask_to_bbox, sample_scene)
from linattn_vision.data.demo import MANIFEST_NAME
from linattn_vision.data.formats import _SCENE_STREAM, image_rng
from tool_helpers import load_tool  # tests/tool_helpers.py

PARAMS = dict(num_train=8, num_val=6, size=64, seed=7)


def _files(root: Path):
    return sorted(p for p in root.rglob('*') if p.is_file())


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    paths = make_demo_data(root, progress=False, log=None, **PARAMS)
    return root, paths


def test_layout_and_determinism(demo, tmp_path):
    root, paths = demo
    assert (paths['coco'] / 'annotations' / 'instances_train2017.json').is_file()
    assert len(list((paths['coco'] / 'val2017').glob('*.jpg'))) == 6
    assert len(list((paths['ade'] / 'images' / 'training').glob('*.jpg'))) == 8
    assert len(list((paths['ade'] / 'annotations' / 'validation').glob('*.png'))) == 6
    assert len(list((paths['imagenet'] / 'train').glob('n*/*.JPEG'))) == 8

    again = make_demo_data(tmp_path / 'again', progress=False, log=None, **PARAMS)
    first_files, second_files = _files(root), _files(tmp_path / 'again')
    assert [p.relative_to(root) for p in first_files] == [p.relative_to(tmp_path / 'again') for p in second_files]
    for a, b in zip(first_files, second_files):
        assert a.read_bytes() == b.read_bytes(), f'{a.relative_to(root)} differs between two runs with one seed'
    assert again['coco'] == tmp_path / 'again' / 'coco'

    other = make_demo_data(tmp_path / 'other', tasks=['coco'], progress=False, log=None, **{**PARAMS, 'seed': 8})
    assert ((other['coco'] / 'annotations' / 'instances_val2017.json').read_bytes()
            != (paths['coco'] / 'annotations' / 'instances_val2017.json').read_bytes())


def test_cache_reuse_regeneration_and_foreign_folders(tmp_path):
    messages = []
    make_demo_data(tmp_path, tasks=['imagenet'], progress=False, log=messages.append, **PARAMS)
    marker = tmp_path / 'imagenet' / 'train' / 'marker'
    marker.write_text('kept while the manifest matches')
    make_demo_data(tmp_path, tasks=['imagenet'], progress=False, log=messages.append, **PARAMS)
    assert marker.exists() and 'reusing' in messages[-1]

    make_demo_data(tmp_path, tasks=['imagenet'], progress=False, log=messages.append, **{**PARAMS, 'num_val': 7})
    assert not marker.exists() and 'regenerating' in messages[-2]
    assert json.loads((tmp_path / 'imagenet' / MANIFEST_NAME).read_text())['params']['num_val'] == 7
    assert len(list((tmp_path / 'imagenet' / 'val').glob('*/*.JPEG'))) == 7

    (tmp_path / 'coco').mkdir()
    (tmp_path / 'coco' / 'real_data.json').write_text('{}')
    with pytest.raises(FileExistsError, match='no demo_manifest.json'):
        make_demo_data(tmp_path, tasks=['coco'], progress=False, log=None, **PARAMS)
    assert (tmp_path / 'coco' / 'real_data.json').exists()
    make_demo_data(tmp_path, tasks=['coco'], force=True, progress=False, log=None, **PARAMS)
    assert not (tmp_path / 'coco' / 'real_data.json').exists()
    assert not list(tmp_path.glob('.*.partial'))

    with pytest.raises(ValueError, match="unknown demo data task.*'voc'"):
        make_demo_data(tmp_path, tasks=['voc'], log=None)
    with pytest.raises(ValueError, match='size must be an integer >= 32'):
        make_demo_data(tmp_path, size=16, log=None)
    with pytest.raises(ValueError, match='at least one image per class'):
        make_demo_data(tmp_path, tasks=['imagenet'], num_val=3, log=None)


def _scene(split, index):
    return sample_scene(image_rng(PARAMS['seed'], _SCENE_STREAM, split, index), PARAMS['size'])


def test_coco_parses_and_matches_visible_masks(demo):
    _, paths = demo
    for split, count in (('train', 8), ('val', 6)):
        coco = COCO(str(paths['coco'] / 'annotations' / f'instances_{split}2017.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
        assert len(coco.getImgIds()) == count
        num_annotations = 0
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            image = cv2.imread(str(paths['coco'] / f'{split}2017' / info['file_name']))
            assert image.shape == (64, 64, 3)
            scene = _scene(split, image_id - 1)
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(annotations) == len(scene.instances)
            for annotation, instance in zip(annotations, scene.instances):
                assert annotation['iscrowd'] == 0 and annotation['category_id'] == instance.label + 1
                decoded = coco.annToMask(annotation).astype(bool)
                iou = (decoded & instance.mask).sum() / (decoded | instance.mask).sum()
                assert iou > 0.9, f'polygon mask IoU {iou:.3f} for annotation {annotation["id"]}'
                assert annotation['area'] == instance.mask.sum()
                assert annotation['bbox'] == mask_to_bbox(instance.mask)
                assert np.abs(np.array(mask_to_bbox(decoded)) - annotation['bbox']).max() <= 1.0
                num_annotations += 1
        assert num_annotations >= count  # at least one object per scene
        # the COCO API's own RLE path agrees with the polygons
        rle = coco.annToRLE(coco.loadAnns(coco.getAnnIds())[0])
        assert mask_utils.area(rle) > 0


def test_ade_labels_match_class_list_and_scenes(demo):
    _, paths = demo
    lines = [line.split(' ', 1) for line in (paths['ade'] / 'classes.txt').read_text().splitlines()
             if not line.startswith('#')]
    assert [(int(value), name) for value, name in lines] == list(enumerate(DEMO_SEG_CLASSES, start=1))
    seen = set()
    for split, folder, prefix, count in (('train', 'training', 'ADE_train', 8), ('val', 'validation', 'ADE_val', 6)):
        for index in range(count):
            stem = f'{prefix}_{index + 1:08d}'
            labels = cv2.imread(str(paths['ade'] / 'annotations' / folder / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            assert labels.dtype == np.uint8 and labels.shape == (64, 64)
            assert labels.max() <= len(DEMO_SEG_CLASSES)
            assert np.array_equal(labels, ade_label_map(_scene(split, index)))
            assert (paths['ade'] / 'images' / folder / f'{stem}.jpg').is_file()
            seen |= set(np.unique(labels).tolist())
    assert 1 in seen and len(seen - {0, 1}) >= 3, f'label values seen: {sorted(seen)}'


def test_imagefolder_loads_with_torchvision(demo):
    from torchvision import datasets
    _, paths = demo
    train = datasets.ImageFolder(str(paths['imagenet'] / 'train'))
    val = datasets.ImageFolder(str(paths['imagenet'] / 'val'))
    assert train.classes == list(DEMO_WNIDS) == val.classes
    assert len(train) == 8 and len(val) == 6
    assert sorted(val.targets) == list(range(6))  # image i has class i % K: balanced
    image, target = train[0]
    assert image.size == (64, 64) and image.mode == 'RGB'
    mapping = (paths['imagenet'] / 'LOC_synset_mapping.txt').read_text().split('\n')
    assert mapping[:len(DEMO_CLASSES)] == [f'{w} {n}' for w, n in zip(DEMO_WNIDS, DEMO_CLASSES)]


def test_cli_writes_and_prints_paths(tmp_path, capsys):
    cli = load_tool('make_demo_data')
    out = tmp_path / 'cli'
    cli.main(['--out', str(out), '--tasks', 'imagenet', '--num-train', '6', '--num-val', '6', '--size', '32',
              '--no-progress'])
    printed = capsys.readouterr().out
    assert str(out / 'imagenet') in printed and 'demo data ready' in printed
    assert len(list((out / 'imagenet' / 'train').glob('*/*.JPEG'))) == 6
    with pytest.raises(SystemExit, match='num_train must be an integer >= 1'):
        cli.main(['--out', str(out), '--num-train', '0'])
