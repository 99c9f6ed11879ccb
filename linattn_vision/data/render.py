"""Natural-looking synthetic scenes: textured backgrounds, unlabelled clutter, shaded objects with shadows, occlusion.

Geometry is decided first (where every object goes, which parts stay visible), painting second, so the visible masks
are exact by construction: an object's visible mask is its own coverage minus what later (nearer) objects cover.
Everything is drawn from the ``numpy.random.Generator`` passed in, so a seed fixes the scene.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from .masks import rasterize, remove_small_components
from .shapes import DEMO_CLASSES, Outline, sample_blob, sample_outline


@dataclass
class Instance:
    label: int  # index into DEMO_CLASSES
    mask: np.ndarray  # bool H x W, the visible pixels


@dataclass
class Scene:
    image: np.ndarray  # uint8 H x W x 3, RGB
    instances: list[Instance]  # back to front; visible masks are disjoint
    ignore: np.ndarray  # bool H x W: slivers of objects too small to annotate


# ----------------------------------------------------------------------------------------------------------- textures

def _random_colour(rng, saturation=(0.15, 0.6), value=(0.3, 0.95)) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _smooth_noise(rng, height, width, cells) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled smoothly."""
    grid = rng.uniform(size=(cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)


def _fractal_noise(rng, height, width, octaves=4) -> np.ndarray:
    total = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        weight = 0.5 ** octave
        total += weight * _smooth_noise(rng, height, width, 2 ** (octave + 1))
        weight_sum += weight
    return total / weight_sum


def _ramp(rng, height, width) -> np.ndarray:
    """A linear gradient in [0, 1] along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    return (t - t.min()) / max(float(t.max() - t.min()), 1e-6)


def _stripes(rng, height, width, period) -> np.ndarray:
    """Wavy stripes in [0, 1] (wood, fabric, tiles) with a random direction."""
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    warp = rng.uniform(0.0, 4.0) * _smooth_noise(rng, height, width, 3)
    phase = 2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + warp
    return 0.5 + 0.5 * np.sin(phase)


def _background(rng, height, width) -> np.ndarray:
    first, second = _random_colour(rng), _random_colour(rng)
    mix = 0.5 * _ramp(rng, height, width) + 0.5 * _fractal_noise(rng, height, width)
    mix = (mix - mix.min()) / max(float(mix.max() - mix.min()), 1e-6)
    image = first * (1 - mix[..., None]) + second * mix[..., None]
    if rng.uniform() < 0.4:
        pattern = _stripes(rng, height, width, period=rng.uniform(0.04, 0.2) * max(height, width))
        image *= (1.0 + rng.uniform(0.08, 0.25) * (pattern[..., None] - 0.5))
    grain = _smooth_noise(rng, height, width, max(height, width) // 3) - 0.5
    image *= (1.0 + rng.uniform(0.05, 0.2) * grain[..., None])
    sigma = rng.uniform(0.0, 1.5)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image


def _object_paint(rng, height, width, colour) -> np.ndarray:
    """Full-frame paint for one object: its colour with shading and an optional texture."""
    shading = 1.0 + rng.uniform(-0.35, 0.35) * (_ramp(rng, height, width) - 0.5)
    paint = colour * shading[..., None]
    style = rng.uniform()
    if style < 0.3:  # mottled
        paint *= (1.0 + rng.uniform(0.1, 0.3) * (_fractal_noise(rng, height, width, 3)[..., None] - 0.5))
    elif style < 0.5:  # two-colour stripes
        pattern = _stripes(rng, height, width, period=rng.uniform(0.05, 0.12) * max(height, width))[..., None]
        second = _random_colour(rng, saturation=(0.3, 1.0), value=(0.3, 1.0))
        strength = rng.uniform(0.25, 0.6)
        paint = paint * (1 - strength * pattern) + second * strength * pattern
    return paint


def _contrasting_colour(rng, background_mean) -> np.ndarray:
    """An object colour, any hue, that stands out from the background below it."""
    best, best_distance = None, -1.0
    for _ in range(8):
        colour = _random_colour(rng, saturation=(0.35, 1.0), value=(0.25, 1.0))
        distance = float(np.linalg.norm(colour - background_mean))
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance > 90.0:
            break
    return best


# ------------------------------------------------------------------------------------------------------------ scenes

def _place_objects(rng, size, labels, radius_range, min_visible, max_tries):
    """Pick outlines back to front; every earlier object keeps at least ``min_visible`` of its area visible."""
    placed = []  # (label, outline, coverage, full mask, visible mask)
    for label in labels:
        for _ in range(max_tries):
            radius = size * float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
            center = rng.uniform(0.15 * radius, size - 0.15 * radius, size=2)
            outline = sample_outline(int(label), center, radius, rng)
            coverage = rasterize(outline, size, size)
            full = coverage >= 0.5
            if full.sum() < 0.75 * outline.area:  # mostly outside the frame
                continue
            if all((visible & ~full).sum() >= min_visible * own.sum() for _, _, _, own, visible in placed):
                break
        else:
            continue  # no room for this object
        placed = [(l, o, c, own, visible & ~full) for l, o, c, own, visible in placed]
        placed.append((int(label), outline, coverage, full, full.copy()))
    return placed


def _paint(rng, size, placed, num_blobs) -> np.ndarray:
    image = _background(rng, size, size)
    light = rng.uniform(0, 2 * np.pi)
    for _ in range(num_blobs):  # unlabelled clutter in the same palette as the background: part of the background
        radius = size * rng.uniform(0.08, 0.25)
        blob = rasterize(sample_blob(rng.uniform(0, size, size=2), radius, rng), size, size)
        tint = image[blob > 0.5].mean(0) if (blob > 0.5).any() else image.mean((0, 1))
        tint = tint * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20, size=3)
        blob = cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.5, 2.0))[..., None]
        image = image * (1 - blob) + tint.astype(np.float32) * blob
    shadow_offset = np.array([np.cos(light), np.sin(light)]) * size * rng.uniform(0.01, 0.03)
    shadow_strength = rng.uniform(0.15, 0.45) if rng.uniform() < 0.7 else 0.0
    for _, _, coverage, full, _ in placed:
        if shadow_strength:
            shift = np.float32([[1, 0, shadow_offset[0]], [0, 1, shadow_offset[1]]])
            shadow = cv2.warpAffine(coverage, shift, (size, size))
            shadow = cv2.GaussianBlur(shadow, (0, 0), size * 0.015 + 0.5)
            image = image * (1 - shadow_strength * shadow[..., None])
        colour = _contrasting_colour(rng, image[full].mean(0))
        paint = _object_paint(rng, size, size, colour)
        alpha = coverage[..., None]
        image = image * (1 - alpha) + paint * alpha
    sigma = rng.uniform(0.0, 0.7)
    if sigma > 0.25:  # a touch of lens blur
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0.0, rng.uniform(1.0, 5.0), size=image.shape).astype(np.float32)  # sensor noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def sample_scene(rng: np.random.Generator, size: int, num_objects=(2, 5), radius_range=(0.09, 0.25),
                 min_visible: float = 0.5, min_fragment: int = 8, max_tries: int = 25) -> Scene:
    """A scene with ``num_objects`` (inclusive range) objects of random classes, possibly occluding each other.

    ``radius_range`` is the objects' rough radius as a fraction of ``size``; occluded objects keep at least
    ``min_visible`` of their area; visible pieces smaller than ``min_fragment`` pixels go to ``Scene.ignore``.
    """
    if size < 16:
        raise ValueError(f'scene size must be at least 16 pixels, got {size}')
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    labels = rng.integers(0, len(DEMO_CLASSES), size=count)
    placed = _place_objects(rng, size, labels, radius_range, min_visible, max_tries)
    image = _paint(rng, size, placed, num_blobs=int(rng.integers(0, 3)))
    instances, ignore = [], np.zeros((size, size), dtype=bool)
    for label, _, _, _, visible in placed:
        kept = remove_small_components(visible, min_fragment)
        ignore |= visible & ~kept
        if kept.any():
            instances.append(Instance(label=label, mask=kept))
    return Scene(image=image, instances=instances, ignore=ignore)


def sample_object_image(rng: np.random.Generator, size: int, label: int, radius_range=(0.25, 0.42)) -> np.ndarray:
    """A classification image: one dominant object of class ``label`` on a textured, cluttered background."""
    if size < 16:
        raise ValueError(f'image size must be at least 16 pixels, got {size}')
    radius = size * rng.uniform(*radius_range)
    center = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    outline = sample_outline(int(label), center, radius, rng)
    coverage = rasterize(outline, size, size)
    placed = [(int(label), outline, coverage, coverage >= 0.5, coverage >= 0.5)]
    return _paint(rng, size, placed, num_blobs=int(rng.integers(0, 3)))
