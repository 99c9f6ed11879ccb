"""Writers for the three real dataset layouts the demo uses.

- COCO instances (mmdet ``CocoDataset``): ``coco/annotations/instances_{train,val}2017.json`` with boxes, visible-region
  polygons and areas, images in ``coco/{train,val}2017/<12-digit id>.jpg``; category ids 1..K named ``DEMO_CLASSES``.
- ADE20K (mmseg ``ADE20KDataset``, ``reduce_zero_label=True``): ``ade/ADEChallengeData2016/images/{training,validation}/
  *.jpg`` and ``annotations/.../*.png`` (uint8). Label 0 is "unlabelled" (ignored after reduce_zero_label), 1 is
  background, 2..K+1 the shapes, so the segmentation classes are ``DEMO_SEG_CLASSES = ('background', *DEMO_CLASSES)``.
- ImageFolder / ImageNet: ``imagenet/{train,val}/<wnid>/*.JPEG``, one dominant object per image, balanced classes,
  plus ``LOC_synset_mapping.txt`` (``<wnid> <name>`` per line) as in the ImageNet Kaggle release.

Every image is drawn from its own generator seeded by (seed, stream, split, index), so any single file can be
regenerated alone, and COCO and ADE20K images with the same split and index show the same scene.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from .masks import mask_to_bbox, mask_to_polygons
from .render import sample_object_image, sample_scene
from .shapes import DEMO_CLASSES

DEMO_SEG_CLASSES = ('background',) + DEMO_CLASSES
DEMO_WNIDS = tuple(f'n{index + 1:08d}' for index in range(len(DEMO_CLASSES)))
ADE_UNLABELLED, ADE_BACKGROUND = 0, 1  # ADE label values; shape k is written as k + 2
# Fixed drawing colours for the visualizers (mmdet/mmseg otherwise pick random ones for unknown classes).
DEMO_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))
DEMO_SEG_PALETTE = ((120, 120, 120),) + DEMO_PALETTE

_SCENE_STREAM, _CLASSIFICATION_STREAM = 1, 2
_SPLIT_IDS = {'train': 0, 'val': 1}
_JPEG_QUALITY = 92

Progress = Callable[[Iterable, int, str], Iterable]


def image_rng(seed: int, stream: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, _SPLIT_IDS[split], index)))


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise OSError(f'could not write image {path}')


def _no_progress(iterable, total, desc):
    return iterable


def write_coco(coco_root: Path, counts: dict, size: int, seed: int, progress: Progress = _no_progress) -> None:
    """COCO 2017 layout under ``coco_root``; ``counts`` maps 'train'/'val' to image counts."""
    annotation_dir = coco_root / 'annotations'
    annotation_dir.mkdir(parents=True, exist_ok=True)
    categories = [dict(id=index + 1, name=name, supercategory='shape') for index, name in enumerate(DEMO_CLASSES)]
    for split, count in counts.items():
        image_dir = coco_root / f'{split}2017'
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in progress(range(count), count, f'coco {split}'):
            scene = sample_scene(image_rng(seed, _SCENE_STREAM, split, index), size)
            image_id = index + 1
            file_name = f'{image_id:012d}.jpg'
            _write_jpeg(image_dir / file_name, scene.image)
            images.append(dict(id=image_id, file_name=file_name, height=size, width=size))
            for instance in scene.instances:
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id, category_id=instance.label + 1,
                    segmentation=mask_to_polygons(instance.mask), area=float(instance.mask.sum()),
                    bbox=mask_to_bbox(instance.mask), iscrowd=0))
        document = dict(
            info=dict(description='linattn_vision synthetic shapes demo', version='1.0', year=2026),
            licenses=[], images=images, annotations=annotations, categories=categories)
        with open(annotation_dir / f'instances_{split}2017.json', 'w') as f:
            json.dump(document, f, separators=(',', ':'))


def ade_label_map(scene) -> np.ndarray:
    """The ADE20K-style uint8 label image of a scene."""
    labels = np.full(scene.image.shape[:2], ADE_BACKGROUND, dtype=np.uint8)
    for instance in scene.instances:
        labels[instance.mask] = instance.label + 2
    labels[scene.ignore] = ADE_UNLABELLED
    return labels


def write_ade(ade_root: Path, counts: dict, size: int, seed: int, progress: Progress = _no_progress) -> None:
    """ADEChallengeData2016 layout under ``ade_root`` plus ``classes.txt`` (``<label value> <name>`` per line)."""
    folders = {'train': ('training', 'ADE_train'), 'val': ('validation', 'ADE_val')}
    ade_root.mkdir(parents=True, exist_ok=True)
    lines = [f'# label values of annotations/*.png; {ADE_UNLABELLED} = unlabelled (ignored, reduce_zero_label=True)']
    lines += [f'{index + 1} {name}' for index, name in enumerate(DEMO_SEG_CLASSES)]
    (ade_root / 'classes.txt').write_text('\n'.join(lines) + '\n')
    for split, count in counts.items():
        folder, prefix = folders[split]
        image_dir, label_dir = ade_root / 'images' / folder, ade_root / 'annotations' / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index in progress(range(count), count, f'ade {split}'):
            scene = sample_scene(image_rng(seed, _SCENE_STREAM, split, index), size)
            stem = f'{prefix}_{index + 1:08d}'
            _write_jpeg(image_dir / f'{stem}.jpg', scene.image)
            if not cv2.imwrite(str(label_dir / f'{stem}.png'), ade_label_map(scene)):
                raise OSError(f'could not write label map {label_dir / stem}.png')


def write_imagefolder(imagenet_root: Path, counts: dict, size: int, seed: int,
                      progress: Progress = _no_progress) -> None:
    """ImageNet-style ``train``/``val`` class folders; image ``i`` of a split has class ``i % K``."""
    imagenet_root.mkdir(parents=True, exist_ok=True)
    mapping = [f'{wnid} {name}' for wnid, name in zip(DEMO_WNIDS, DEMO_CLASSES)]
    (imagenet_root / 'LOC_synset_mapping.txt').write_text('\n'.join(mapping) + '\n')
    for split, count in counts.items():
        for wnid in DEMO_WNIDS:
            (imagenet_root / split / wnid).mkdir(parents=True, exist_ok=True)
        for index in progress(range(count), count, f'imagenet {split}'):
            label = index % len(DEMO_CLASSES)
            image = sample_object_image(image_rng(seed, _CLASSIFICATION_STREAM, split, index), size, label)
            wnid = DEMO_WNIDS[label]
            name = f'{wnid}_{index + 1}.JPEG' if split == 'train' else f'ILSVRC2012_val_{index + 1:08d}.JPEG'
            _write_jpeg(imagenet_root / split / wnid / name, image)
