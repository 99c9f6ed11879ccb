"""Deterministic demo data in the real COCO, ADE20K and ImageFolder formats (numpy + OpenCV only).

``make_demo_data('data/demo')`` writes synthetic scenes of six shape classes (textured backgrounds, varied colour,
size, rotation, occlusion) that the stock mmdet ``CocoDataset``, mmseg dataset classes and torchvision
``ImageFolder`` load unchanged. Detection configs pass ``metainfo=dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)``
to ``CocoDataset``. Segmentation configs read the ADE20K folders with ``type='BaseSegDataset'``, ``img_suffix='.jpg'``,
``seg_map_suffix='.png'``, ``reduce_zero_label=True`` and ``metainfo=dict(classes=DEMO_SEG_CLASSES,
palette=DEMO_SEG_PALETTE)``: ``ADE20KDataset`` itself is BaseSegDataset with those defaults but rejects class names
that are not among its own 150 (``ValueError`` from ``get_label_map``).
"""
from .demo import (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SIZE, DEMO_TASKS, demo_data_paths, generator_hash,
                   make_demo_data)
from .formats import DEMO_PALETTE, DEMO_SEG_CLASSES, DEMO_SEG_PALETTE, DEMO_WNIDS, ade_label_map
from .masks import mask_to_bbox, mask_to_polygons, rasterize
from .render import Instance, Scene, sample_object_image, sample_scene
from .shapes import DEMO_CLASSES

__all__ = [
    'DEMO_CLASSES', 'DEMO_PALETTE', 'DEMO_SEG_CLASSES', 'DEMO_SEG_PALETTE', 'DEMO_WNIDS', 'DEMO_TASKS',
    'DEFAULT_NUM_TRAIN', 'DEFAULT_NUM_VAL', 'DEFAULT_SIZE', 'Instance', 'Scene', 'ade_label_map', 'demo_data_paths',
    'generator_hash', 'make_demo_data', 'mask_to_bbox', 'mask_to_polygons', 'rasterize', 'sample_object_image',
    'sample_scene',
]
