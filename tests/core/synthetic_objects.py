"""Synthetic touching disks and ellipses with known instances, and instance matching.

Shared by tests/core/test_objects.py and benchmarks/bench_objects.py.
"""

from __future__ import annotations

import numpy as np


def touching_shapes(seed: int = 0, shape=(256, 256), n: int = 40):
    """``(instances, class_map)``: disks (class 1) and ellipses (class 2) placed so that
    most of them touch a neighbour of their own class, as cells do: two shapes' centres
    are 0.9-1.0 of the sum of their radii along the line between them apart."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.indices(shape)
    placed = []  # (row, col, a, b, angle, class)
    tries = 0
    while len(placed) < n and tries < 20 * n:
        tries += 1
        kind = 1 + int(rng.random() < 0.5)
        near = placed[rng.integers(len(placed))] if placed and rng.random() < 0.9 else None
        if near is not None:
            kind = near[5]  # touching objects of the same class: the class map cannot split them
        a = rng.uniform(8, 13)
        b = a if kind == 1 else a / rng.uniform(1.3, 1.7)
        angle = rng.uniform(0, np.pi)
        if near is not None:
            phi = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0.9, 1.0) * (_radius(near, phi) + _radius((0, 0, a, b, angle), phi))
            r, c = near[0] + d * np.sin(phi), near[1] + d * np.cos(phi)
        else:
            r, c = rng.uniform(a, h - a), rng.uniform(a, w - a)
        if not (a <= r < h - a and a <= c < w - a):
            continue
        # no more than a small overlap with anything placed (by the inner radii)
        new = (r, c, a, b, angle)
        if any(_gap(new, p) < 0.9 for p in placed):
            continue
        placed.append((r, c, a, b, angle, kind))
    # each pixel goes to the shape in whose normalised radius it lies deepest
    best = np.full(shape, np.inf)
    instances = np.zeros(shape, np.int32)
    classes = np.zeros(shape, np.uint8)
    for i, (r, c, a, b, t, k) in enumerate(placed, start=1):
        dr, dc = rows - r, cols - c
        u = dc * np.cos(t) + dr * np.sin(t)
        v = -dc * np.sin(t) + dr * np.cos(t)
        q = (u / a) ** 2 + (v / b) ** 2
        win = (q < 1) & (q < best)
        best[win] = q[win]
        instances[win] = i
        classes[win] = k
    return instances, classes


def _radius(shape, phi: float) -> float:
    """Radius of an ellipse ``(row, col, a, b, angle)`` in direction ``phi``."""
    _, _, a, b, t = shape[:5]
    return a * b / np.hypot(b * np.cos(phi - t), a * np.sin(phi - t))


def _gap(p, q) -> float:
    """Centre distance of two ellipses over the sum of their radii along that line."""
    d = np.hypot(p[0] - q[0], p[1] - q[1])
    phi = np.arctan2(q[0] - p[0], q[1] - p[1])
    return d / (_radius(p, phi) + _radius(q, phi))


def matching_f1(truth: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> float:
    """F1 of instances matched one to one at IoU > ``iou`` (unique when ``iou`` >= 0.5)."""
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    inter = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)[1:, 1:]
    at = np.bincount(t, minlength=nt)[1:]
    ap = np.bincount(p, minlength=np_)[1:]
    union = at[:, None] + ap[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    tp = int((ious > iou).sum())
    n_true, n_pred = int((at > 0).sum()), int((ap > 0).sum())
    return 2 * tp / max(n_true + n_pred, 1)
