"""Several classes' probabilities -> one label image."""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError

__all__ = [
    "MAX_LABEL",
    "check_label_limit",
    "check_threshold",
    "fuse_labels",
    "label_dtype",
    "sigmoid",
]

# Label images are uint8, uint16 or uint32, the smallest that holds the largest class id
# (the core, the dataset runner, the napari layers and the writer all use this rule).
LABEL_DTYPES = (np.uint8, np.uint16, np.uint32)
MAX_LABEL = int(np.iinfo(LABEL_DTYPES[-1]).max)


def check_threshold(threshold) -> float:
    allowed = "a number strictly between 0 and 1"
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise OptionError("threshold", threshold, allowed) from None
    if not 0.0 < t < 1.0:
        raise OptionError("threshold", threshold, allowed)
    return t


def sigmoid(logits: np.ndarray) -> np.ndarray:
    out = np.negative(logits, dtype=np.float32)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def check_label_limit(label: int, what: str = "label") -> int:
    """``label`` if a label image can hold it (at most :data:`MAX_LABEL`), else a clear error."""
    if label > MAX_LABEL:
        shown = str(label) if label < 10**20 else f"{label:.6g}"
        raise InvalidInputError(
            f"{what} {shown} is too large: class ids must be at most {MAX_LABEL} (the "
            "largest a uint32 label image holds); number the classes 1, 2, 3, ..."
        )
    return label


def label_dtype(max_label: int) -> np.dtype:
    """The smallest of uint8, uint16 and uint32 that holds ``max_label`` (the one rule
    for every label image the package makes); above :data:`MAX_LABEL` an error."""
    max_label = check_label_limit(int(max_label), "class id")
    for dt in LABEL_DTYPES:
        if max_label <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise AssertionError("unreachable: MAX_LABEL fits the widest type")


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
