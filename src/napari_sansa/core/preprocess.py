"""From images and prompts to SAM2's inputs, following the authors' evaluation pipeline.

* Image: [0, 1] RGB -> (optional) resize to ``input_size`` x ``input_size`` (bilinear,
  antialiased; the authors use 640) -> ImageNet mean/std -> resize to the model's
  square input (bilinear, antialiased, no padding, aspect ratio not kept).
* Mask: (optional) nearest-neighbour resize to ``input_size`` -> bilinear antialiased
  resize to the model's input -> ``> 0``.
* Points, boxes, scribbles: scaled to the model's grid. This module is the one place
  where napari/numpy ``(row, col)`` becomes SAM2's ``(x, y)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.prompts import Box, Mask, Points, Scribble

__all__ = [
    "IMAGENET_MEAN",
    "MAX_SCRIBBLE_POINTS",
    "IMAGENET_STD",
    "check_input_size",
    "image_to_input",
    "mask_to_input",
    "sparse_prompts_to_input",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# SAM2 point labels
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3


def check_input_size(input_size) -> int | None:
    if input_size is None:
        return None
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise InvalidInputError(
            f"input_size must be a whole number of pixels (the authors use 640) or None, "
            f"got {input_size!r}"
        )
    if not 16 <= int(input_size) <= 8192:
        raise InvalidInputError(f"input_size must be between 16 and 8192, got {input_size}")
    return int(input_size)


def _resize(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def image_to_input(
    rgb: np.ndarray, image_size: int, input_size: int | None, device
) -> torch.Tensor:
    """``(H, W, 3)`` float [0, 1] -> normalised ``(3, S, S)`` float32 tensor on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device=device, dtype=torch.float32)
    x = x.permute(2, 0, 1)[None]
    if input_size is not None:
        x = _resize(x, input_size)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return _resize(x, image_size)[0]


def mask_to_input(
    mask: np.ndarray, image_size: int, input_size: int | None, device
) -> torch.Tensor:
    """Binary ``(H, W)`` mask -> ``(1, 1, S, S)`` bool tensor on the model's grid."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(device=device)  # a new array
    m = m[None, None]
    if input_size is not None:
        m = _resize(m, input_size, mode="nearest")
    return _resize(m, image_size) > 0


def _to_sam_xy(rows_cols: np.ndarray, hw: tuple[int, int], image_size: int) -> np.ndarray:
    """(row, col) pixels of an ``hw`` image -> SAM2's (x, y) on the model's square grid."""
    h, w = hw
    rows_cols = np.asarray(rows_cols, dtype=np.float64)
    return np.stack(
        [rows_cols[:, 1] * (image_size / w), rows_cols[:, 0] * (image_size / h)], axis=1
    )


#: The most points one scribble becomes. A stroke whose one-point-per-pixel sampling
#: would give more is sampled with this many points spread evenly along it instead.
MAX_SCRIBBLE_POINTS = 4096


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


def sparse_prompts_to_input(prompts, hw: tuple[int, int], image_size: int):
    """Points/boxes/scribbles of one class on one image -> (P, 2) x,y coords, (P,) labels."""
    coords, labels = [], []
    for p in prompts:
        if isinstance(p, Points):
            coords.append(_to_sam_xy(p.coords, hw, image_size))
            labels.append(np.where(p.positive, POSITIVE, NEGATIVE))
        elif isinstance(p, Box):
            r0, c0, r1, c1 = p.box
            coords.append(_to_sam_xy(np.array([[r0, c0], [r1, c1]]), hw, image_size))
            labels.append(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]))
        elif isinstance(p, Scribble):
            xy = densify_path(_to_sam_xy(p.path, hw, image_size))
            coords.append(xy)
            labels.append(np.full(len(xy), POSITIVE))
        elif isinstance(p, Mask):
            raise TypeError("masks are not sparse prompts")
    return (
        np.concatenate(coords, axis=0).astype(np.float32),
        np.concatenate(labels, axis=0).astype(np.int32),
    )
