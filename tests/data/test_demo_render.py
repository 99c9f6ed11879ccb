"""Scene geometry and mask/polygon conversion of the demo-data generator."""
import numpy as np
import pytest

from linattn_vision.data import (DEMO_CLASSES, mask_to_bbox, mask_to_polygons, rasterize, sample_object_image,
                                 sample_scene)
from linattn_vision.data.render import _place_objects
from linattn_vision.data.shapes import Outline, sample_outline

from pycocotools import mask as mask_utils


def _polygons_to_mask(polygons, height, width):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_rasterize_matches_geometry():
    square = Outline(outer=[np.array([[10.0, 20.0], [30.0, 20.0], [30.0, 25.0], [10.0, 25.0]])])
    coverage = rasterize(square, 40, 40)
    assert coverage.dtype == np.float32 and coverage.shape == (40, 40)
    expected = np.zeros((40, 40), bool)
    expected[20:25, 10:30] = True  # pixel-edge convention: x in [10, 30), y in [20, 25)
    assert np.array_equal(coverage >= 0.5, expected)
    assert coverage.sum() == pytest.approx(square.area, rel=0.04)  # fillPoly's inclusive edges: +1/16 px a side
    outside = Outline(outer=[np.array([[50.0, 50.0], [60.0, 50.0], [55.0, 60.0]])])
    assert not rasterize(outside, 40, 40).any()


def test_bbox_is_tight_in_pixel_edges():
    mask = np.zeros((20, 30), bool)
    mask[3:7, 5:12] = True
    assert mask_to_bbox(mask) == [5.0, 3.0, 7.0, 4.0]
    with pytest.raises(ValueError, match='non-empty'):
        mask_to_bbox(np.zeros((4, 4), bool))


@pytest.mark.parametrize('label', range(len(DEMO_CLASSES)))
def test_polygons_reproduce_each_shape(label):
    rng = np.random.default_rng(label)
    mask = rasterize(sample_outline(label, (32.0, 30.0), 14.0, rng), 64, 64) >= 0.5
    polygons = mask_to_polygons(mask)
    assert polygons and all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    assert _iou(_polygons_to_mask(polygons, 64, 64), mask) > 0.95


def test_polygon_keeps_holes_and_separate_parts():
    mask = np.zeros((48, 48), bool)
    mask[4:30, 4:30] = True
    mask[10:20, 12:22] = False  # hole
    mask[36:44, 36:46] = True  # second component
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    decoded = _polygons_to_mask(polygons, 48, 48)
    assert not decoded[11:19, 13:21].any(), 'the hole was filled'
    assert _iou(decoded, mask) > 0.97


def test_scene_masks_are_disjoint_visible_and_deterministic():
    first = sample_scene(np.random.default_rng(3), 96)
    again = sample_scene(np.random.default_rng(3), 96)
    assert np.array_equal(first.image, again.image)
    assert first.image.shape == (96, 96, 3) and first.image.dtype == np.uint8
    assert len(first.instances) >= 1
    cover = np.zeros((96, 96), int)
    for instance, twin in zip(first.instances, again.instances):
        assert np.array_equal(instance.mask, twin.mask) and instance.label == twin.label
        assert 0 <= instance.label < len(DEMO_CLASSES) and instance.mask.sum() >= 8
        cover += instance.mask
    assert cover.max() <= 1, 'visible masks overlap'
    assert not (first.ignore & (cover > 0)).any()


def test_occluded_objects_keep_the_visible_fraction():
    occluded = 0
    for seed in range(4):
        placed = _place_objects(np.random.default_rng(seed), 64, labels=[0, 1, 2, 3, 4, 5],
                                radius_range=(0.2, 0.3), min_visible=0.6, max_tries=25)
        for _, _, _, full, visible in placed:
            assert visible.sum() >= 0.6 * full.sum()
            occluded += visible.sum() < full.sum()
    assert occluded > 0, 'crowded scenes should contain some occlusion'


def test_classification_image_and_bad_inputs():
    image = sample_object_image(np.random.default_rng(0), 48, label=2)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and image.std() > 5
    with pytest.raises(ValueError, match='label must be in'):
        sample_outline(len(DEMO_CLASSES), (10, 10), 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match='at least 16'):
        sample_scene(np.random.default_rng(0), 8)
