"""Several classes' probabilities -> one label image."""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = ["check_threshold", "fuse_labels", "label_dtype", "sigmoid"]


def check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"threshold must be a number in (0, 1), got {threshold!r}"
        ) from None
    if not 0.0 < t < 1.0:
        raise InvalidInputError(f"threshold must be strictly between 0 and 1, got {t:g}")
    return t


def sigmoid(logits: np.ndarray) -> np.ndarray:
    out = np.negative(logits, dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def label_dtype(max_label: int) -> np.dtype:
    """The smallest unsigned integer type that holds ``max_label``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_label <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def fuse_labels(probabilities: dict[int, np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """Per pixel, the class with the highest probability; 0 where none exceeds ``threshold``.

    Ties go to the smaller class id.
    """
    if not probabilities:
        raise InvalidInputError("no class probabilities to fuse")
    classes = sorted(probabilities)
    first = probabilities[classes[0]]
    best = first.copy()
    labels = np.zeros(first.shape, dtype=label_dtype(classes[-1]))
    labels[first > threshold] = classes[0]
    for c in classes[1:]:
        p = probabilities[c]
        win = (p > best) & (p > threshold)
        labels[win] = c
        np.maximum(best, p, out=best)
    return labels
