"""Synthetic training frames for the fine-tuning tests: bright ellipses on texture."""

from __future__ import annotations

import numpy as np

GRID = 64  # loss grid (input_size) of the tests: small and fast


def ellipse_frame(seed: int, shape=(64, 64), classes=(1,)):
    """A bright ellipse per class on a textured background, and its label map."""
    r = np.random.default_rng(seed)
    img = (r.random((*shape, 3)) * 90).astype(np.uint8)
    lab = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for c in classes:
        cy, cx = r.integers(16, shape[0] - 16), r.integers(16, shape[1] - 16)
        m = ((yy - cy) / r.integers(6, 12)) ** 2 + ((xx - cx) / r.integers(6, 12)) ** 2 < 1
        img[m] = np.clip(img[m].astype(int) + 120 + 30 * c, 0, 255)
        lab[m] = c
    return img, lab
