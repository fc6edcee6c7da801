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
import weakref
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
    "FrameWindows",
    "PromptError",
    "StackGeometry",
    "SEPARATE_LAYERS",
    "chosen_level",
    "fit_problem",
    "labels_array",
    "labels_on_image",
    "level_count",
    "level_factors",
    "multiscale_problem",
    "set_level",
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


# -- multiscale (pyramid) layers -------------------------------------------------------

_LEVELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def level_count(layer) -> int:
    """How many resolution levels a layer has (1: not multiscale)."""
    return len(layer.data) if getattr(layer, "multiscale", False) else 1


def set_level(layer, level: int) -> None:
    """Label ``layer`` (a multiscale image) at its resolution ``level`` (0: the full
    resolution) for this session; the layer itself is not changed."""
    level = int(level)
    if not 0 <= level < level_count(layer):
        raise PromptError(
            f"'{layer.name}' has resolution levels 0..{level_count(layer) - 1}, not {level}"
        )
    _LEVELS[layer] = level


def chosen_level(layer) -> int:
    """The resolution level a run labels (0, the full resolution, unless chosen)."""
    try:
        level = _LEVELS.get(layer, 0)
    except TypeError:  # not weak-referenceable (a stand-in in a test)
        level = 0
    return level if level < level_count(layer) else 0


def at_level(name: str, image) -> str:
    """A layer name of ``image``'s results at the level a run labels: ``name`` at the full
    resolution, ``name (level k)`` at a coarser one (its own layer, on that level's
    pixels, found again by the next run at that level)."""
    level = chosen_level(image)
    return f"{name} (level {level})" if level else name


def _spatial_shape(layer, shape) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)[:-1] if layer.rgb else tuple(int(s) for s in shape)


def multiscale_problem(layer) -> str | None:
    """Why a multiscale image layer is not a pyramid that can be labelled (None: it is,
    or the layer is not multiscale): every level must have the dimensions of the full
    resolution, be no larger than the level before on every axis, and shrink rows and
    columns alike (the same factor, within a pixel of rounding)."""
    if not getattr(layer, "multiscale", False):
        return None
    shapes = [tuple(int(s) for s in level.shape) for level in layer.data]
    first = shapes[0]
    text = ", ".join("x".join(map(str, s)) for s in shapes)
    fix = (
        f"the levels of '{layer.name}' ({text}) are not a pyramid of one image: {{}}; open "
        "the image again (as one array, or with a reader that makes the levels by "
        "downsampling it), or label one level saved as an image of its own"
    )
    for k, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first) or (layer.rgb and shape[-1] != first[-1]):
            return fix.format(f"level {k} has shape {shape}, the full resolution {first}")
        before = shapes[k - 1]
        bigger = [i for i, (a, b) in enumerate(zip(shape, before, strict=True)) if a > b]
        if bigger:
            axis = {len(shape) - 2: "rows", len(shape) - 1: "columns"}
            if layer.rgb:
                axis = {len(shape) - 3: "rows", len(shape) - 2: "columns"}
            where = axis.get(bigger[0], f"axis {bigger[0]}")
            return fix.format(f"level {k} is larger than level {k - 1} ({where})")
        (h0, w0), (h, w) = _spatial_shape(layer, first)[-2:], _spatial_shape(layer, shape)[-2:]
        if min(h, w) < 1 or abs(w0 * h / h0 - w) > 1 and abs(h0 * w / w0 - h) > 1:
            return fix.format(
                f"level {k} ({h}x{w}) does not keep the {h0}x{w0} image's aspect ratio"
            )
    return None


def level_factors(layer, level: int | None = None) -> np.ndarray:
    """How many full-resolution pixels one pixel of ``level`` (default: the chosen
    one) spans, per axis of the layer's data (no colour axis); ones for level 0.

    napari places pixel ``i`` of a level at ``i * factor`` in the full resolution's
    data coordinates (its ``downsample_factors``), and so does everything here."""
    level = chosen_level(layer) if level is None else level
    first = _spatial_shape(layer, layer.data[0].shape) if level else ()
    if not level:
        return np.ones(layer.ndim)
    shape = _spatial_shape(layer, layer.data[level].shape)
    return np.array([a / b for a, b in zip(first, shape, strict=True)], dtype=float)


def labels_array(layer):
    """The array of an output Labels layer that runs write and read: its full resolution
    when it is multiscale (its other levels are views of it, :func:`.outputs.output_pyramid`)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def image_data(layer: napari.layers.Image):
    """The array a run labels of an image layer: its chosen resolution level of a
    multiscale layer (by default the full resolution, level 0)."""
    return layer.data[chosen_level(layer)] if layer.multiscale else layer.data


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
                "channel axis in the 'channel axis' box under the image (or 'none')"
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


class FrameWindows:
    """One frame of an image layer's array, read window by window: ``frame[rows, cols]``
    reads only those pixels (a tile), ``numpy.asarray(frame)`` the whole frame. Given
    for the frames of multiscale layers (whose levels are often dask or zarr arrays too
    large to hold whole), so that a run by tiles never reads a whole level at once."""

    def __init__(self, data, index: tuple, geometry: StackGeometry):
        self.data, self.index, self.geometry = data, tuple(index), geometry
        g = geometry
        if g.rgb:
            self.shape = (*g.hw, int(data.shape[-1]))
        elif g.channel_axis is not None and len(g.channels) > 1:
            self.shape = (*g.hw, 3)
        else:
            self.shape = tuple(g.hw)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows, cols, *rest = (*key, slice(None), slice(None))[: max(len(key), 2)]
        if any(not isinstance(k, slice) for k in (rows, cols)):
            raise TypeError("a frame's windows are read with slices: frame[r0:r1, c0:c1]")
        block = np.asarray(self.data[(*self.index, rows, cols)])
        if self.geometry.channel_axis is not None:
            block = frame_image(block, self.geometry)
        return block[(slice(None), slice(None), *rest)] if rest else block

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameWindows(shape={self.shape}, dtype={self.dtype})"


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
    #: frames as :class:`FrameWindows` (read by windows), not read whole
    windows: bool = False

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
        if self.windows:
            return FrameWindows(self.data, self.geometry.index(frame), self.geometry)
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
        frames = tuple(int(f) for f in frames)
        return FrameStack(self.data, self.geometry, frames, self.name, self.windows)


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
    """Homogeneous matrix mapping ``layer``'s data coordinates to the image's pixels: those
    of the level a run labels for a multiscale image (see :func:`level_factors`)."""
    matrix = np.linalg.solve(_data_to_world(image_layer), _data_to_world(layer))
    if getattr(image_layer, "multiscale", False) and chosen_level(image_layer):
        matrix = np.diag([*(1.0 / level_factors(image_layer)), 1.0]) @ matrix
    return matrix


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
        "result tracks",
    )


def _kind(layer) -> str:
    return type(layer).__name__.lower()


def labels_on_image(layer, image_layer):
    """``(masks, None)``: a Labels layer's class ids on the pixels a run labels of
    ``image_layer`` (an array of the image's label shape, read lazily), or
    ``(None, problem)`` saying why the layer cannot be used.

    The layer lies on the image's pixels (same shape and placement), or, for an image
    labelled at a lower resolution level (:func:`set_level`), it may lie on the full
    resolution's pixels, as a layer painted on the multiscale image does: it is then
    sampled at the level's pixels (every ``factor``-th pixel, nearest neighbour, where
    napari shows them). A multiscale Labels layer (e.g. a labels group of an OME-Zarr)
    is read at its full resolution."""
    geometry = image_geometry(image_layer)
    name, image = layer.name, image_layer.name
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    n = layer.ndim
    steps = np.ones(n, dtype=int)
    same_ndim = n == image_layer.ndim
    matrix = layer_to_image(layer, image_layer) if same_ndim else None
    if same_ndim and not np.allclose(matrix, np.eye(n + 1), atol=1e-6):
        scale = np.diag(matrix)[:n]
        linear_ok = np.allclose(matrix[:n, :n], np.diag(scale), atol=1e-6)
        steps = np.rint(1.0 / np.where(scale > 0, scale, np.inf)).astype(int)
        on_grid = (
            bool(getattr(image_layer, "multiscale", False))  # painted on a pyramid's base
            and linear_ok
            and np.allclose(matrix[:n, n], 0, atol=1e-6)
            and (steps >= 1).all()
            and np.allclose(steps * scale, 1, atol=1e-6)
        )
        if not on_grid and shape != geometry.shape:
            steps = np.ones(n, dtype=int)  # the shape is wrong too: said first
        elif not on_grid:
            return None, (
                f"the Labels layer '{name}' does not lie on the pixels of '{image}' (its "
                "scale, translate, rotate, shear or affine differ): give it the image's"
            )
    want = geometry.shape
    got = tuple(-(-s // int(k)) for s, k in zip(shape, steps, strict=True))  # ceil
    if (
        len(got) != len(want)
        or any(g < w for g, w in zip(got, want, strict=True))
        or (steps.max() == 1 and got != want)
    ):
        colour = " (the image's shape without its colour axis)" if geometry.rgb else ""
        level = chosen_level(image_layer)
        full = ""
        if level:
            base = _spatial_shape(image_layer, image_layer.data[0].shape)
            full = f", or {base} with the image's scale (its full resolution)"
        return None, (
            f"the Labels layer '{name}' has shape {shape}, but masks for '{image}' "
            f"need shape {want}{colour}{full}: paint in a Labels layer of the "
            "image's shape (for example with the 'labels' button of this widget)"
        )
    if steps.max() == 1:
        return data, None
    sampled = data[tuple(slice(None, None, int(k)) for k in steps)]
    return sampled[tuple(slice(0, w) for w in want)], None


def fit_problem(image_layer, layer) -> str | None:
    """Why ``layer`` cannot hold prompts for ``image_layer`` (None: it can)."""
    from napari.layers import Labels

    image_geometry(image_layer)  # an image that cannot be labelled says why first
    name, image = layer.name, image_layer.name
    if isinstance(layer, Labels):
        return labels_on_image(layer, image_layer)[1]
    if layer.ndim != image_layer.ndim:
        return (
            f"the {_kind(layer)} layer '{name}' has {layer.ndim} dimensions but the image "
            f"'{image}' has {image_layer.ndim}: draw prompts in a layer with the image's "
            "dimensions, so that each prompt belongs to one frame"
        )
    return None
