"""Outlines of the demo object classes.

Each class is a shape family; size, aspect, rotation and colour vary per instance so that only the shape tells the
class apart. Outlines are float polygons in pixel-edge coordinates (pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``,
the COCO convention), split into filled outer rings and holes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEMO_CLASSES = ('ellipse', 'rectangle', 'triangle', 'star', 'ring', 'cross')


@dataclass
class Outline:
    """A shape as polygons: ``outer`` are filled, ``holes`` are cut out afterwards. Arrays are (N, 2) float (x, y)."""
    outer: list[np.ndarray]
    holes: list[np.ndarray] = field(default_factory=list)

    @property
    def area(self) -> float:
        return sum(_polygon_area(p) for p in self.outer) - sum(_polygon_area(p) for p in self.holes)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ellipse(rx: float, ry: float, num_points: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _place(points: np.ndarray, center, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    return points @ rotation.T + np.asarray(center, dtype=np.float64)


def sample_outline(label: int, center, radius: float, rng: np.random.Generator) -> Outline:
    """Random outline of class ``DEMO_CLASSES[label]`` fitting roughly in a circle of ``radius`` around ``center``."""
    if not 0 <= label < len(DEMO_CLASSES):
        raise ValueError(f'label must be in [0, {len(DEMO_CLASSES)}), got {label}')
    name = DEMO_CLASSES[label]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    holes: list[np.ndarray] = []
    if name == 'ellipse':
        outer = _ellipse(radius, radius * rng.uniform(0.55, 1.0))
    elif name == 'rectangle':
        half_w = radius * rng.uniform(0.75, 0.95)
        half_h = half_w * rng.uniform(0.45, 1.0)
        outer = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    elif name == 'triangle':
        corner_angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, size=3)
        corner_radii = radius * rng.uniform(0.9, 1.1, size=3)
        outer = np.stack([corner_radii * np.cos(corner_angles), corner_radii * np.sin(corner_angles)], axis=1)
    elif name == 'star':
        num_tips = 5
        t = np.arange(2 * num_tips) * np.pi / num_tips
        radii = np.where(np.arange(2 * num_tips) % 2 == 0, radius, radius * rng.uniform(0.4, 0.52))
        outer = np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)
    elif name == 'ring':
        squash = rng.uniform(0.8, 1.0)
        inner = rng.uniform(0.45, 0.62)
        outer = _ellipse(radius, radius * squash)
        holes = [_place(_ellipse(radius * inner, radius * inner * squash), center, angle)]
    else:  # cross
        arm, half_width = radius, radius * rng.uniform(0.27, 0.38)
        a, w = arm, half_width
        outer = np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
                          [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]])
    return Outline(outer=[_place(outer, center, angle)], holes=holes)


def sample_blob(center, radius: float, rng: np.random.Generator) -> Outline:
    """An irregular smooth closed blob: background clutter that belongs to no class."""
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0.0, 0.35 / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    points = np.stack([radius * r * np.cos(t), radius * r * rng.uniform(0.5, 1.0) * np.sin(t)], axis=1)
    return Outline(outer=[_place(points, center, rng.uniform(0, 2 * np.pi))])
