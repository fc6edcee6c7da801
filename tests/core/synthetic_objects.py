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


def touching_ellipsoids(seed: int = 0, shape=(24, 96, 96), n: int = 12, spacing=(3.0, 1.0, 1.0)):
    """``(instances, class_map)`` of a z-stack of touching ellipsoids (class 1; a few of
    class 2), voxels of ``spacing`` ``(z, y, x)``: semi-axes of 7-11 units (about two
    planes or more in z when z spacing is 3), randomly rotated; most touch a neighbour
    of their own class (centres 0.9-1.0 of the sum of their radii along the line
    between them apart), as nuclei in a tissue. Each voxel goes to the ellipsoid in
    whose normalised radius it lies deepest."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape) * sp
    placed = []  # (centre (3,), matrix (3, 3), class)
    tries = 0
    while len(placed) < n and tries < 30 * n:
        tries += 1
        axes = rng.uniform(7, 11, size=3)
        axes[1:] = axes[0] / rng.uniform(1.0, 1.4, size=2) * rng.uniform(0.9, 1.1)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        m = q @ np.diag(1 / axes**2) @ q.T
        kind = 1 + int(rng.random() < 0.2)
        near = placed[rng.integers(len(placed))] if placed and rng.random() < 0.9 else None
        if near is not None:
            kind = near[2]
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            d = rng.uniform(0.9, 1.0) * (_radius3(near[1], u) + _radius3(m, u))
            centre = near[0] + d * u
        else:
            centre = rng.uniform(axes.max(), extent - axes.max())
        if np.any(centre < 0.5 * axes.min()) or np.any(centre > extent - 0.5 * axes.min()):
            continue
        if any(_gap3((centre, m), p) < 0.9 for p in placed):
            continue
        placed.append((centre, m, kind))
    coords = (np.indices(shape).reshape(3, -1).T + 0.5) * sp
    best = np.full(coords.shape[0], np.inf)
    instances = np.zeros(coords.shape[0], np.int32)
    classes = np.zeros(coords.shape[0], np.uint8)
    for i, (centre, m, kind) in enumerate(placed, start=1):
        d = coords - centre
        q = np.einsum("ij,jk,ik->i", d, m, d)
        win = (q < 1) & (q < best)
        best[win] = q[win]
        instances[win] = i
        classes[win] = kind
    instances = instances.reshape(shape)
    # an ellipsoid that lost most of itself to its neighbours or the border is dropped
    sizes = np.bincount(instances.ravel(), minlength=len(placed) + 1)
    gone = np.flatnonzero(sizes < 20)
    gone = gone[gone > 0]
    classes = classes.reshape(shape)
    if gone.size:
        drop = np.isin(instances, gone)
        instances[drop], classes[drop] = 0, 0
    return instances, classes


def _radius3(m, u) -> float:
    """Radius of the ellipsoid ``x^T m x = 1`` in the unit direction ``u``."""
    return float(1 / np.sqrt(u @ m @ u))


def _gap3(p, q) -> float:
    """Centre distance of two ellipsoids over the sum of their radii along that line."""
    d = q[0] - p[0]
    dist = np.linalg.norm(d)
    u = d / max(dist, 1e-9)
    return dist / (_radius3(p[1], u) + _radius3(q[1], u))
