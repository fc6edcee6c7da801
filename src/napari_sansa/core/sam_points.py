"""SAM2's point prompts: ``(row, col)`` pixels become ``(x, y)`` on the model's grid.

This module (numpy only) is the one place where napari/numpy ``(row, col)`` becomes
SAM2's ``(x, y)``; the prompt classes (:mod:`napari_sansa.core.prompts`) give their
clicks through it, and a scribble is sampled here into clicks along its stroke.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_SCRIBBLE_POINTS", "densify_path", "to_sam_xy"]

# SAM2 point labels
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3

#: The most points one scribble becomes. A stroke whose one-point-per-pixel sampling
#: would give more is sampled with this many points spread evenly along it instead.
MAX_SCRIBBLE_POINTS = 4096


def to_sam_xy(rows_cols: np.ndarray, hw: tuple[int, int], image_size: int) -> np.ndarray:
    """(row, col) pixels of an ``hw`` image -> SAM2's (x, y) on the model's square grid."""
    h, w = hw
    rows_cols = np.asarray(rows_cols, dtype=np.float64)
    return np.stack(
        [rows_cols[:, 1] * (image_size / w), rows_cols[:, 0] * (image_size / h)], axis=1
    )


def densify_path(xy: np.ndarray, spacing: float = 1.0, max_points: int = MAX_SCRIBBLE_POINTS):
    """Points along a polyline, at most ``spacing`` apart, vertices included.

    A path that would give more than ``max_points`` points (a long or very winding
    stroke) gives ``max_points`` points spread evenly along its length instead, both
    ends included, so that the prompt's size stays bounded.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 1:
        return xy.copy()
    steps = np.diff(xy, axis=0)
    lengths = np.sqrt((steps**2).sum(axis=1))
    n = np.maximum(np.ceil(lengths / spacing).astype(np.int64), 1)
    if 1 + int(n.sum()) > max_points:
        return _even_along(xy, lengths, max_points)
    seg = np.repeat(np.arange(len(n)), n)  # the segment of each new point
    k = np.arange(len(seg)) - np.repeat(np.cumsum(n) - n, n) + 1  # 1..n within its segment
    t = (k.astype(np.float64) / n[seg])[:, None]
    a, b = xy[:-1][seg], xy[1:][seg]
    return np.concatenate([xy[:1], a + (b - a) * t], axis=0)


def _even_along(xy: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced by arc length along the polyline ``xy``."""
    keep = np.concatenate([[True], lengths > 0])  # repeated vertices add no length
    xy, lengths = xy[keep], lengths[lengths > 0]
    if len(xy) == 1:
        return xy.copy()
    at = np.concatenate([[0.0], np.cumsum(lengths)])
    where = np.linspace(0.0, at[-1], count)
    return np.stack([np.interp(where, at, xy[:, 0]), np.interp(where, at, xy[:, 1])], axis=1)
