"""Image checks and intensity conversion (numpy only).

Accepted images: 2D grayscale ``(H, W)``, ``(H, W, 1)``, grayscale with alpha
``(H, W, 2)``, RGB ``(H, W, 3)`` and RGBA ``(H, W, 4)`` (alpha is dropped), at
least 2 pixels on each side. Any array-like with ``shape``/``dtype`` works (numpy,
memory-mapped TIFFs, dask arrays); pixels are read only when the image is converted.

Intensity rule, to the [0, 1] range the model expects:

* ``intensity_range=(lo, hi)`` given: ``(x - lo) / (hi - lo)``, clipped to [0, 1]
  (the napari widget passes the layer's contrast limits, so that every frame of a
  stack is scaled the same way).
* otherwise ``uint8``: divided by 255 (the authors' pipeline); ``bool``: 0 or 1;
  floats already within [0, 1]: used as they are; anything else (``uint16``,
  other integers, other floats): rescaled per image from its minimum to its
  maximum.

Images containing NaN or infinity, and constant images, are refused.
"""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError

__all__ = ["check_image", "drop_alpha", "image_hw", "scale_to_unit", "to_float_rgb"]

MIN_SIDE = 2


def image_hw(image, what: str = "image") -> tuple[int, int]:
    """Check an image's shape without reading its pixels; return ``(H, W)``."""
    shape = getattr(image, "shape", None)
    if shape is None:
        try:
            shape = np.shape(image)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            shape = None
    if shape is None:
        raise InvalidInputError(f"the {what} is not an array (got {type(image).__name__})")
    shape = tuple(int(s) for s in shape)
    dtype = getattr(image, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "biuf":
        raise InvalidInputError(
            f"the {what} has dtype {dtype}; use a numeric (integer, float or bool) image"
        )
    if len(shape) == 2:
        h, w = shape
    elif len(shape) == 3 and shape[2] in (1, 2, 3, 4):
        h, w = shape[:2]
    elif len(shape) == 3:
        raise InvalidInputError(
            f"the {what} has shape {shape}: expected (rows, cols) grayscale or "
            "(rows, cols, channels) with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) "
            "channels last"
        )
    else:
        raise InvalidInputError(
            f"the {what} has {len(shape)} dimensions (shape {shape}): give one 2D image, "
            "grayscale (rows, cols) or color (rows, cols, 3); pass a stack as a list of "
            "images, one per frame"
        )
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InvalidInputError(
            f"the {what} is {h}x{w} pixels: it needs at least {MIN_SIDE} pixels on each side"
        )
    return h, w


def drop_alpha(arr: np.ndarray) -> np.ndarray:
    """2D gray or ``(H, W, 3)`` RGB: alpha and a single channel axis dropped."""
    if arr.ndim == 3:
        return arr[..., :3] if arr.shape[2] >= 3 else arr[..., 0]  # gray (+ alpha): gray
    return arr


def _read_checked(image, what: str):
    """The pixels (alpha dropped: 2D gray or RGB) and their min/max, after every check."""
    image_hw(image, what)
    arr = drop_alpha(np.asarray(image))
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError(
            f"the {what} contains NaN or infinite values: replace them (e.g. with "
            "numpy.nan_to_num) before segmenting"
        )
    lo_v, hi_v = arr.min(), arr.max()
    if lo_v == hi_v:
        raise InvalidInputError(
            f"the {what} is constant (every pixel is {lo_v}): there is nothing to segment"
        )
    return arr, lo_v, hi_v


def check_image(image, what: str = "image") -> tuple[int, int]:
    """Raise the error :func:`to_float_rgb` would raise, without converting; return (H, W)."""
    arr, _, _ = _read_checked(image, what)
    return arr.shape[:2]


def to_float_rgb(image, intensity_range=None, what: str = "image") -> np.ndarray:
    """Return a new ``float32`` array ``(H, W, 3)`` with values in [0, 1]."""
    arr, lo_v, hi_v = _read_checked(image, what)
    return scale_to_unit(arr, lo_v, hi_v, intensity_range)


def scale_to_unit(arr: np.ndarray, lo_v, hi_v, intensity_range=None) -> np.ndarray:
    """The intensity rule on pixels ``arr`` (after :func:`drop_alpha`) whose image has the
    minimum ``lo_v`` and maximum ``hi_v``: a new ``float32`` ``(h, w, 3)`` array in [0, 1].

    ``arr`` may be a part of the image (a tile): the rule follows the whole image's range."""
    if intensity_range is not None:
        lo, hi = check_range(intensity_range)
        out = (arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
        np.clip(out, 0.0, 1.0, out=out)
    elif arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255.0)
    elif arr.dtype == bool or arr.dtype.kind == "f" and lo_v >= 0 and hi_v <= 1:
        out = arr.astype(np.float32)
    else:
        lo_f, hi_f = float(lo_v), float(hi_v)
        out = ((arr.astype(np.float64) - lo_f) / (hi_f - lo_f)).astype(np.float32)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def check_range(intensity_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"intensity_range must be two numbers (low, high), got {intensity_range!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        raise InvalidInputError(f"intensity_range must satisfy low < high, got ({lo:g}, {hi:g})")
    return lo, hi


#: the authors' intermediate square resize, the default of every run and fine-tuning
DEFAULT_INPUT_SIZE = 640


def check_input_size(input_size) -> int | None:
    allowed = (
        f"a whole number of pixels between 16 and 8192 (the authors use {DEFAULT_INPUT_SIZE}) "
        "or None"
    )
    if input_size is None:
        return None
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise OptionError("input_size", input_size, allowed)
    if not 16 <= int(input_size) <= 8192:
        raise OptionError("input_size", input_size, allowed)
    return int(input_size)


def input_size_from_text(text) -> int | None:
    """``input_size`` written as text (a command line's): a number of pixels, or "none"
    (also "0" and ""), checked."""
    size = str(text).strip().lower()
    if size in ("none", "0", ""):
        return None
    if not size.isdigit():
        raise OptionError("input_size", text, "a number of pixels or 'none'")
    return check_input_size(int(size))


#: the options whose command-line text needs reading, by keyword: their readers
TEXT_OPTIONS = {"input_size": input_size_from_text}
