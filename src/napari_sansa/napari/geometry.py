"""How an image layer splits into frames, and how layers sit on each other.

Frames. The image layer's last two axes (before the colour axis of an RGB image)
are a frame's rows and columns; every other (leading) axis indexes frames, which
are numbered in C order over the leading axes (``numpy.ravel_multi_index``). A 2D
image is a stack of one frame.

Layers live in their own data coordinates; :func:`layer_to_image` maps one
layer's data coordinates to an image's through both layers' transforms (scale,
translate, rotate, shear, affine). :func:`fit_problem` says why a layer cannot
hold prompts for an image. Main thread only; the values returned are frozen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sansa.core import InvalidInputError

if TYPE_CHECKING:
    import napari

__all__ = [
    "META_KEY",
    "FrameStack",
    "PromptError",
    "StackGeometry",
    "fit_problem",
    "image_data",
    "image_geometry",
    "is_prompt_layer",
    "layer_role",
    "layer_to_image",
]

#: key in ``layer.metadata`` marking the layers napari-sansa made (value: their role)
META_KEY = "napari-sansa"


class PromptError(InvalidInputError):
    """A prompt layer cannot be used as it is; the message says what to change."""


# -- geometry ------------------------------------------------------------------------


@dataclass(frozen=True)
class StackGeometry:
    """How an image layer splits into frames."""

    leading: tuple[int, ...]  # sizes of the frame axes; () for a single 2D image
    hw: tuple[int, int]
    rgb: bool

    @property
    def n_frames(self) -> int:
        return math.prod(self.leading)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of a label stack for this image (no colour axis)."""
        return (*self.leading, *self.hw)

    def index(self, frame: int) -> tuple[int, ...]:
        """The leading-axes index of a frame number."""
        if not self.leading:
            return ()
        return tuple(int(i) for i in np.unravel_index(int(frame), self.leading))

    def frame(self, index) -> int:
        """The frame number of a leading-axes index."""
        if not self.leading:
            return 0
        return int(np.ravel_multi_index(tuple(int(i) for i in index), self.leading))

    def describe(self, frame: int) -> str:
        index = self.index(frame)
        if len(index) <= 1:
            return f"frame {frame}"
        return f"frame {frame} (index {', '.join(map(str, index))})"


def image_data(layer: napari.layers.Image):
    """The full-resolution array of an image layer."""
    return layer.data[0] if layer.multiscale else layer.data


def image_geometry(layer: napari.layers.Image) -> StackGeometry:
    shape = tuple(int(s) for s in image_data(layer).shape)
    rgb = bool(layer.rgb)
    spatial = shape[:-1] if rgb else shape
    if len(spatial) < 2:
        raise PromptError(
            f"the image layer '{layer.name}' has shape {shape}: it needs at least two "
            "axes (rows, cols)"
        )
    if min(spatial[-2:]) < 2:
        raise PromptError(
            f"the image layer '{layer.name}' is {spatial[-2]}x{spatial[-1]} pixels per frame: "
            "a frame needs at least 2 pixels on each side"
        )
    return StackGeometry(tuple(spatial[:-2]), (spatial[-2], spatial[-1]), rgb)


@dataclass(frozen=True, eq=False)
class FrameStack(Sequence):
    """Read-only, lazy access to an image's frames (one array read per item).

    ``frames`` picks and orders the frames; by default all of them. Handed to the
    worker: it holds the layer's array, never the layer.
    """

    data: Any
    geometry: StackGeometry
    frames: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.geometry.n_frames if self.frames is None else len(self.frames)

    def frame_number(self, i: int) -> int:
        return int(i) if self.frames is None else self.frames[i]

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("FrameStack does not slice; iterate over it or index one frame")
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        frame = self.frame_number(i % len(self))
        return np.asarray(self.data[self.geometry.index(frame)])

    def select(self, frames) -> FrameStack:
        return FrameStack(self.data, self.geometry, tuple(int(f) for f in frames))


# -- transforms ----------------------------------------------------------------------


def _data_to_world(layer) -> np.ndarray:
    """The layer's data-to-world transform as a homogeneous (ndim+1) square matrix.

    Read through the public ``data_to_world`` (an affine map, so its values at the
    origin and the unit vectors define it)."""
    n = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(n)), dtype=float)
    m = np.eye(n + 1)
    for k in range(n):
        unit = np.zeros(n)
        unit[k] = 1.0
        m[:n, k] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    m[:n, n] = origin
    return m


def layer_to_image(layer, image_layer) -> np.ndarray:
    """Homogeneous matrix mapping ``layer``'s data coordinates to the image's."""
    return np.linalg.solve(_data_to_world(image_layer), _data_to_world(layer))


def apply_matrix(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=float).reshape(-1, matrix.shape[0] - 1)
    return coords @ matrix[:-1, :-1].T + matrix[:-1, -1]


# -- layer roles and fit -------------------------------------------------------------


def layer_role(layer) -> str | None:
    """'output', 'probability', 'references', ... for layers napari-sansa made."""
    meta = getattr(layer, "metadata", None) or {}
    value = meta.get(META_KEY)
    return value if isinstance(value, str) else None


def is_prompt_layer(layer) -> bool:
    """A Points, Shapes or Labels layer that is not one of napari-sansa's outputs."""
    from napari.layers import Labels, Points, Shapes

    return isinstance(layer, (Points, Shapes, Labels)) and layer_role(layer) not in (
        "output",
        "probability",
        "objects",
    )


def _kind(layer) -> str:
    return type(layer).__name__.lower()


def fit_problem(image_layer, layer) -> str | None:
    """Why ``layer`` cannot hold prompts for ``image_layer`` (None: it can)."""
    from napari.layers import Labels

    geometry = image_geometry(image_layer)
    name, image = layer.name, image_layer.name
    if isinstance(layer, Labels):
        if layer.multiscale:
            return f"the Labels layer '{name}' is multiscale; prompt masks must be a single array"
        shape = tuple(int(s) for s in layer.data.shape)
        if shape != geometry.shape:
            colour = " (the image's shape without its colour axis)" if geometry.rgb else ""
            return (
                f"the Labels layer '{name}' has shape {shape}, but masks for '{image}' "
                f"need shape {geometry.shape}{colour}: paint in a Labels layer of the "
                "image's shape (for example with the 'labels' button of this widget)"
            )
        if not np.allclose(layer_to_image(layer, image_layer), np.eye(layer.ndim + 1), atol=1e-6):
            return (
                f"the Labels layer '{name}' does not lie on the pixels of '{image}' (its "
                "scale, translate, rotate, shear or affine differ): give it the image's"
            )
        return None
    if layer.ndim != image_layer.ndim:
        return (
            f"the {_kind(layer)} layer '{name}' has {layer.ndim} dimensions but the image "
            f"'{image}' has {image_layer.ndim}: draw prompts in a layer with the image's "
            "dimensions, so that each prompt belongs to one frame"
        )
    return None
