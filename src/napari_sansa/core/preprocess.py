"""From images and prompts to SAM2's inputs, following the authors' evaluation pipeline.

* Image: [0, 1] RGB -> (optional) resize to ``input_size`` x ``input_size`` (bilinear,
  antialiased; the authors use 640) -> ImageNet mean/std -> resize to the model's
  square input (bilinear, antialiased, no padding, aspect ratio not kept).
* Mask: (optional) nearest-neighbour resize to ``input_size`` -> bilinear antialiased
  resize to the model's input -> ``> 0``.
* Points, boxes, scribbles: each prompt gives its clicks on the model's grid
  (:meth:`~napari_sansa.core.prompts.Points.sam_points`), through
  :mod:`napari_sansa.core.sam_points`, the one place where napari/numpy ``(row, col)``
  becomes SAM2's ``(x, y)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_sansa.core.sam_points import MAX_SCRIBBLE_POINTS, densify_path

__all__ = [
    "IMAGENET_MEAN",
    "MAX_SCRIBBLE_POINTS",
    "IMAGENET_STD",
    "densify_path",
    "image_to_input",
    "mask_to_input",
    "sparse_prompts_to_input",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def sparse_prompts_to_input(prompts, hw: tuple[int, int], image_size: int):
    """Points/boxes/scribbles of one class on one image -> (P, 2) x,y coords, (P,) labels."""
    coords, labels = [], []
    for p in prompts:
        if not p.sparse:
            raise TypeError("masks are not sparse prompts")
        xy, kinds = p.sam_points(hw, image_size)
        coords.append(xy)
        labels.append(kinds)
    return (
        np.concatenate(coords, axis=0).astype(np.float32),
        np.concatenate(labels, axis=0).astype(np.int32),
    )
