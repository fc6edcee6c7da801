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
from napari_sansa.napari.axes import (
    MAX_CHANNELS,
    PromptError,
    axes_choice,
    declared_names,
    frame_image,
)

if TYPE_CHECKING:
    import napari

__all__ = [
    "META_KEY",
    "FrameStack",
    "PromptError",
    "StackGeometry",
    "SEPARATE_LAYERS",
    "fit_problem",
    "folder_sizes",
    "image_data",
    "image_geometry",
    "is_prompt_layer",
    "layer_role",
    "layer_to_image",
    "size_problem",
]

#: key in ``layer.metadata`` marking the layers napari-sansa made (value: their role)
META_KEY = "napari-sansa"


#: what to do with images of different sizes (for messages)
SEPARATE_LAYERS = (
    "open the images as separate layers (drag the files, not their folder, onto napari, or "
    "File > Open Files...) and choose them under 'image' and 'with images'"
)


# -- geometry ------------------------------------------------------------------------


@dataclass(frozen=True)
class StackGeometry:
    """How an image layer splits into frames.

    ``leading``: the sizes of the axes before rows and columns; one of them may be
    the channel axis (``channel_axis``, its position among them), whose
    ``channels`` make each frame (one: gray; two or three: red, green, blue). The
    other leading axes are the frame axes (``axis_names`` names every leading axis).
    """

    leading: tuple[int, ...]  # sizes of the leading axes; () for a single 2D image
    hw: tuple[int, int]
    rgb: bool
    channel_axis: int | None = None
    channels: tuple[int, ...] = (0,)
    axis_names: tuple[str, ...] = ()

    @property
    def frame_axes(self) -> tuple[int, ...]:
        """Positions (among the leading axes) of the axes that index frames."""
        return tuple(k for k in range(len(self.leading)) if k != self.channel_axis)

    @property
    def frame_sizes(self) -> tuple[int, ...]:
        return tuple(self.leading[k] for k in self.frame_axes)

    @property
    def n_frames(self) -> int:
        return math.prod(self.frame_sizes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of a label stack for this image (no colour axis; a channel axis
        stays: labels are the same on every channel)."""
        return (*self.leading, *self.hw)

    def index(self, frame: int) -> tuple:
        """The leading-axes index of a frame number (a slice on the channel axis)."""
        if not self.leading:
            return ()
        sizes = self.frame_sizes
        at = [int(i) for i in np.unravel_index(int(frame), sizes)] if sizes else []
        if self.channel_axis is not None:
            at.insert(self.channel_axis, slice(None))
        return tuple(at)

    def frame(self, index) -> int:
        """The frame number of a leading-axes index (its channel entry is ignored)."""
        sizes = self.frame_sizes
        if not sizes:
            return 0
        at = tuple(int(index[k]) for k in self.frame_axes)
        return int(np.ravel_multi_index(at, sizes))

    def axis_name(self, k: int) -> str:
        return self.axis_names[k] if k < len(self.axis_names) else f"axis {k}"

    def describe(self, frame: int) -> str:
        if len(self.leading) <= 1:
            return f"frame {frame}"
        index = self.index(frame)
        if self.channel_axis is None and not self.axis_names:
            return f"frame {frame} (index {', '.join(map(str, index))})"
        at = ", ".join(f"{self.axis_name(k)}={index[k]}" for k in self.frame_axes)
        return f"frame {frame} ({at})"

    def plane(self, data, frame: int, written=None) -> np.ndarray:
        """One frame of a Labels layer's ``data`` as rows x cols. With a channel axis:
        the channel whose plane differs from ``written`` (else the first), or without
        ``written`` every channel's labels together (a prompt painted on any channel)."""
        block = np.asarray(data[self.index(frame)])
        if self.channel_axis is None:
            return block
        if written is not None:
            for plane in block:
                if not np.array_equal(plane, written):
                    return plane
            return block[0]
        return block.max(axis=0)


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
    leading = tuple(spatial[:-2])
    choice = axes_choice(layer, leading)
    names = declared_names(layer)
    k = choice.channel_axis
    if k is not None:
        size = leading[k]
        name = names[k] if k < len(names) else f"axis {k}"
        if not choice.explicit and size > MAX_CHANNELS:
            raise PromptError(
                f"'{layer.name}' declares its {name} axis (axis {k}, {size} long) as channels, "
                f"more than {MAX_CHANNELS}: if that is not where its channels are, choose the "
                "channel axis under 'channel axis' (or 'none')"
            )
        bad = [c for c in choice.channels if not 0 <= c < size]
        if bad or not 1 <= len(choice.channels) <= 3:
            raise PromptError(
                f"'{layer.name}' has channels 0..{size - 1} on its {name} axis: choose one "
                f"channel, or up to three as red, green and blue (not {list(choice.channels)})"
            )
    return StackGeometry(
        leading,
        (spatial[-2], spatial[-1]),
        rgb,
        k,
        choice.channels if k is not None else (0,),
        names if len(names) == len(leading) else (),
    )


@dataclass(frozen=True, eq=False)
class FrameStack(Sequence):
    """Read-only, lazy access to an image's frames (one array read per item).

    ``frames`` picks and orders the frames; by default all of them. Handed to the
    worker: it holds the layer's array, never the layer.
    """

    data: Any
    geometry: StackGeometry
    frames: tuple[int, ...] | None = None
    name: str = "image"

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
        try:
            out = np.asarray(self.data[self.geometry.index(frame)])
            if self.geometry.channel_axis is not None:
                out = frame_image(out, self.geometry)
        except ValueError as exc:  # dask: a file of another size than the stack says
            if "broadcast" not in str(exc):
                raise
            raise InvalidInputError(self._size_problem(frame, None)) from None
        g = self.geometry
        colour = g.rgb or (g.channel_axis is not None and len(g.channels) > 1)
        if out.shape[:2] != g.hw or out.ndim != (3 if colour else 2):
            raise InvalidInputError(self._size_problem(frame, out.shape))
        return out

    def _size_problem(self, frame: int, shape) -> str:
        h, w = self.geometry.hw
        got = "" if shape is None else f" is {'x'.join(map(str, shape))} pixels, but it"
        return (
            f"{self.geometry.describe(frame)} of '{self.name}'{got} does not have the "
            f"{h}x{w} pixels the layer gives every frame (napari stacks a folder of images "
            f"at the first image's size): {SEPARATE_LAYERS}"
        )

    def select(self, frames) -> FrameStack:
        return FrameStack(self.data, self.geometry, tuple(int(f) for f in frames), self.name)


def folder_sizes(layer) -> dict[str, tuple[int, ...] | None] | None:
    """For a layer napari opened from a folder (a stack of its files), each file's
    shape read from its header (no pixels; None: not readable as an image); None for
    other layers."""
    import os
    from glob import glob

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not os.path.isdir(path):
        return None
    return {
        os.path.basename(name): _header_shape(name)
        for name in sorted(glob(os.path.join(path, "*.*")))
        if not os.path.isdir(name)
    }


def _header_shape(path: str) -> tuple[int, ...] | None:
    """(rows, cols) of an image file from its header, or None when it cannot be read."""
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(int(s) for s in tif.series[0].shape)
            colour = len(shape) >= 3 and shape[-1] in (3, 4)
            return shape[-3:-1] if colour else shape[-2:]
        from PIL import Image

        with Image.open(path) as im:
            return (int(im.height), int(im.width))
    except Exception:  # noqa: BLE001 - any reader's failure means: not an image we can use
        return None


def size_problem(layer) -> str | None:
    """Why a stack-like layer cannot be labelled as one stack: napari opened a folder of
    images of different sizes (or with files that are no images) as a stack of the
    first image's size (None: it can)."""
    sizes = folder_sizes(layer)
    if not sizes:
        return None
    bad = [n for n, s in sizes.items() if s is None]
    if bad:
        return (
            f"'{layer.name}' is a folder with files that cannot be read as images "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): move them out of the "
            f"folder and open it again, or {SEPARATE_LAYERS}"
        )
    hw = image_geometry(layer).hw
    other = {n: s for n, s in sizes.items() if tuple(s[:2]) != hw}
    if not other:
        return None
    n, s = next(iter(other.items()))
    return (
        f"'{layer.name}' is a folder of images of different sizes ({len(other)} of "
        f"{len(sizes)} are not {hw[0]}x{hw[1]}, e.g. {n} is {s[0]}x{s[1]}); napari shows them "
        f"as one stack of the first image's size, which cannot be labelled: {SEPARATE_LAYERS}"
    )


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
        "preview",
        "fix",
        "tracks",
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
