"""Rasterising outlines and turning binary masks back into COCO polygons and boxes.

All coordinates use the COCO pixel-edge convention: pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``, so its centre is
at ``(x + 0.5, y + 0.5)``; pycocotools rasterises polygons the same way.
"""
from __future__ import annotations

import cv2
import numpy as np

from .shapes import Outline

_SUPERSAMPLE = 8  # anti-aliasing factor of rendered coverage
_POLY_UPSAMPLE = 4  # contours are traced on a mask upsampled this much, so polygons follow pixel edges closely
_FIXED_POINT_BITS = 4  # sub-pixel precision of cv2.fillPoly


def rasterize(outline: Outline, height: int, width: int) -> np.ndarray:
    """Coverage of ``outline`` per pixel in [0, 1] (float32, H x W), anti-aliased by supersampling.

    cv2.fillPoly fills whole sub-pixels between rounded edges inclusively, which grows a shape by about half a
    sub-pixel per side: 1/16 pixel at the 8x supersampling used here.
    """
    coverage = np.zeros((height, width), dtype=np.float32)
    corners = np.concatenate(outline.outer)
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (width, height))
    if x1 <= x0 or y1 <= y0:
        return coverage  # entirely outside the frame
    ss = _SUPERSAMPLE
    canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), dtype=np.uint8)  # only the outline's box, for speed

    def to_fixed(polygons):
        # Sub-pixel u of the canvas has its centre at edge coordinate x0 + (u + 0.5) / ss.
        return [np.round(((p - (x0, y0)) * ss - 0.5) * (1 << _FIXED_POINT_BITS)).astype(np.int32) for p in polygons]

    cv2.fillPoly(canvas, to_fixed(outline.outer), 255, lineType=cv2.LINE_8, shift=_FIXED_POINT_BITS)
    if outline.holes:
        cv2.fillPoly(canvas, to_fixed(outline.holes), 0, lineType=cv2.LINE_8, shift=_FIXED_POINT_BITS)
    local = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    coverage[y0:y1, x0:x1] = local.astype(np.float32) / 255.0
    return coverage


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` (pixel edges) of a non-empty binary mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError('mask_to_bbox needs a non-empty mask')
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_pixels``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def _bridge_hole(polygon: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """One polygon that walks ``polygon``, jumps to ``hole``, walks it and comes back on the same segment.

    COCO polygons cannot carry holes (pycocotools unions the parts of one segmentation), but pycocotools fills a single
    polygon by crossing parity, so a hole joined to its outer ring by a doubled zero-width bridge stays empty.
    """
    distances = ((polygon[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    return np.concatenate([polygon[:i + 1], hole[j:], hole[:j + 1], polygon[i:]], axis=0)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.2) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` of a binary mask, one per connected component, holes bridged in.

    ``tolerance`` is the largest deviation (pixels) allowed when simplifying the traced outline.
    """
    up = _POLY_UPSAMPLE
    big = np.kron(mask.astype(np.uint8), np.ones((up, up), dtype=np.uint8))
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]

    def simplify(contour):
        approx = cv2.approxPolyDP(contour, tolerance * up, True).reshape(-1, 2).astype(np.float64)
        return (approx + 0.5) / up  # sub-pixel centre -> pixel-edge coordinates

    polygons = []
    for index, (_, _, first_child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue
        polygon = simplify(contours[index])
        child = first_child
        while child != -1:
            hole = simplify(contours[child])
            if len(hole) >= 3:
                polygon = _bridge_hole(polygon, hole)
            child = hierarchy[child][0]
        if len(polygon) >= 3:
            polygons.append([round(float(v), 2) for v in polygon.reshape(-1)])
    return polygons
