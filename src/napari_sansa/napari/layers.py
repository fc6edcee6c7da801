"""napari layers -> SANSA prompts: the one place where layers become core objects.

Everything here runs on the main thread and returns plain, frozen values (the
core's prompt objects, :class:`FramePrompts`, :class:`RunPlan`) that a worker can
use without touching a layer or Qt.

Frames. The image layer's last two axes (before the colour axis of an RGB image)
are a frame's rows and columns; every other (leading) axis indexes frames, which
are numbered in C order over the leading axes (``numpy.ravel_multi_index``). A 2D
image is a stack of one frame.

Prompt layers live in their own data coordinates. Points and Shapes are mapped to
the image's data coordinates through both layers' transforms (scale, translate,
rotate, shear, affine); the leading coordinates are rounded to a frame index.
A prompt Labels layer must have the image's shape (without the colour axis) and
the same transform, so that a painted pixel is an image pixel.

* Labels: every nonzero value is a class id; its pixels are a mask of that class.
* Points: class from the feature column ``label`` (default 1), polarity from the
  feature column ``positive`` (default True: a click on the object).
* Shapes: rectangle -> Box, line/path/polyline -> Scribble, polygon/ellipse ->
  Mask (rasterised); class from the feature column ``label`` (default 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sansa.core import Box, InvalidInputError, Mask, Points, Reference, Scribble

if TYPE_CHECKING:
    import napari

__all__ = [
    "META_KEY",
    "FramePrompts",
    "FrameStack",
    "PromptError",
    "RunPlan",
    "StackGeometry",
    "fit_problem",
    "image_geometry",
    "is_prompt_layer",
    "layer_role",
    "make_plan",
    "points_layer_kwargs",
    "prompts_from_layers",
    "shapes_layer_kwargs",
]

#: key in ``layer.metadata`` marking the layers napari-sansa made (value: their role)
META_KEY = "napari-sansa"

POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"


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


def _apply(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
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


# -- feature values ------------------------------------------------------------------


def _feature(layer, column: str, n: int) -> list | None:
    features = layer.features
    if column not in features.columns:
        return None
    values = features[column].tolist()
    if len(values) != n:  # pragma: no cover - napari keeps these aligned
        raise PromptError(
            f"layer '{layer.name}': the '{column}' feature has {len(values)} rows for {n} items"
        )
    return values


def _as_class(value) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value) if value >= 1 else None
    if isinstance(value, numbers.Real):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() and f >= 1 else None
    if isinstance(value, str) and value.strip().isdigit():
        return _as_class(int(value.strip()))
    return None


def _column(layer, column: str, n: int, default, parse, problem: str, what: str) -> list:
    """One parsed value per item from a feature column (``default`` without the column);
    ``problem`` says why a value that ``parse`` refuses (None) cannot be used."""
    values = _feature(layer, column, n)
    if values is None:
        return [default] * n
    out = []
    for i, v in enumerate(values):
        parsed = parse(v)
        if parsed is None:
            raise PromptError(f"{what} {i} of layer '{layer.name}' has {column}={v!r}: {problem}")
        out.append(parsed)
    return out


def _classes(layer, n: int, what: str) -> list[int]:
    problem = (
        "the 'label' feature must be a whole number >= 1, the class id (0 is background); "
        "set it with the widget's class selector or in the layer's features"
    )
    return _column(layer, "label", n, 1, _as_class, problem, what)


_TRUE = {"true", "yes", "1", "positive", "+"}
_FALSE = {"false", "no", "0", "negative", "-"}


def _as_flag(value) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        return bool(f) if f in (0.0, 1.0) else None
    if isinstance(value, str):
        key = value.strip().lower()
        return True if key in _TRUE else False if key in _FALSE else None
    return None


def _polarities(layer, n: int) -> list[bool]:
    problem = (
        "the 'positive' feature must be True (a click on the object) or False (a negative click)"
    )
    return _column(layer, "positive", n, True, _as_flag, problem, "point")


# -- prompts per frame ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FramePrompts:
    """The prompts of one reference frame (core prompt objects, one per kind and class)."""

    frame: int
    prompts: tuple

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({p.label for p in self.prompts}))

    def masks(self) -> dict[int, np.ndarray]:
        """The painted (or rasterised) masks by class, taken as they are."""
        return {p.label: p.mask for p in self.prompts if isinstance(p, Mask)}


class _Collector:
    """Gathers prompts per (frame, class) from several layers, then merges them."""

    def __init__(self, geometry: StackGeometry):
        self.geometry = geometry
        self.points: dict[tuple[int, int], list] = {}
        self.masks: dict[tuple[int, int], np.ndarray] = {}
        self.other: dict[int, list] = {}
        self.sources: dict[int, set[str]] = {}

    def _note(self, frame: int, layer) -> None:
        self.sources.setdefault(frame, set()).add(layer.name)

    def frame_of(self, leading: np.ndarray, layer, what: str, i: int) -> int:
        """Round leading image coordinates to a frame, or explain why they are not one."""
        g = self.geometry
        if not g.leading:
            return 0
        index = np.rint(leading).astype(np.int64)
        if np.any(index < 0) or np.any(index >= np.asarray(g.leading)):
            where = ", ".join(f"{v:g}" for v in leading)
            raise PromptError(
                f"{what} {i} of layer '{layer.name}' is at frame position ({where}), outside "
                f"the image's {g.n_frames} frame(s) (axes {g.leading})"
            )
        return g.frame(index)

    def check_inside(self, rc: np.ndarray, layer, what: str, i: int, frame: int) -> None:
        h, w = self.geometry.hw
        bad = (rc[:, 0] < -0.5) | (rc[:, 0] > h) | (rc[:, 1] < -0.5) | (rc[:, 1] > w)
        if bad.any():
            r, c = rc[np.argmax(bad)]
            raise PromptError(
                f"{what} {i} of layer '{layer.name}' lies outside the {h}x{w} image on "
                f"{self.geometry.describe(frame)} (at row {r:.1f}, col {c:.1f})"
            )

    def add_point(self, frame, label, rc, positive, layer):
        self.points.setdefault((frame, label), []).append((rc, positive))
        self._note(frame, layer)

    def add_mask(self, frame, label, mask, layer):
        key = (frame, label)
        self.masks[key] = mask if key not in self.masks else (self.masks[key] | mask)
        self._note(frame, layer)

    def add_prompt(self, frame, prompt, layer):
        self.other.setdefault(frame, []).append(prompt)
        self._note(frame, layer)

    def result(self) -> tuple[FramePrompts, ...]:
        frames: dict[int, list] = {}
        for (frame, label), items in sorted(self.points.items()):
            coords = np.array([rc for rc, _ in items])
            positive = np.array([p for _, p in items], dtype=bool)
            if not positive.any():
                raise PromptError(
                    f"{self.geometry.describe(frame)}: all points of class {label} are negative "
                    f"(layers {_names(self.sources[frame])}); add at least one positive click "
                    "on the object"
                )
            frames.setdefault(frame, []).append(Points(coords, label=label, positive=positive))
        for (frame, label), mask in sorted(self.masks.items(), key=lambda kv: kv[0]):
            frames.setdefault(frame, []).append(Mask(mask, label=label))
        for frame, prompts in self.other.items():
            frames.setdefault(frame, []).extend(prompts)
        out = []
        stand_in = np.broadcast_to(np.uint8(0), self.geometry.hw)  # shape only, no pixels
        for frame in sorted(frames):
            prompts = tuple(frames[frame])
            try:  # the core's own checks (mask and clicks of one class, bounds), per frame
                Reference(stand_in, prompts)
            except InvalidInputError as exc:
                raise PromptError(
                    f"{self.geometry.describe(frame)} (layers {_names(self.sources[frame])}): {exc}"
                ) from None
            out.append(FramePrompts(frame, prompts))
        return tuple(out)


def _names(names) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names))


def _points_prompts(layer, image_layer, col: _Collector) -> None:
    data = np.asarray(layer.data, dtype=float)
    n = len(data)
    if n == 0:
        return
    classes = _classes(layer, n, "point")
    positive = _polarities(layer, n)
    coords = _apply(layer_to_image(layer, image_layer), data)
    if not np.isfinite(coords).all():
        i = int(np.argmax(~np.isfinite(coords).all(axis=1)))
        raise PromptError(f"point {i} of layer '{layer.name}' has NaN or infinite coordinates")
    for i in range(n):
        frame = col.frame_of(coords[i, :-2], layer, "point", i)
        rc = coords[i, -2:]
        col.check_inside(rc[None], layer, "point", i, frame)
        col.add_point(frame, classes[i], rc, positive[i], layer)


def _ellipse_outline(corners: np.ndarray, n: int = 64) -> np.ndarray:
    """Points on the ellipse inscribed in a (possibly rotated) box of 4 corners."""
    c = corners.mean(axis=0)
    u = (corners[1] + corners[2]) / 2 - c
    v = (corners[2] + corners[3]) / 2 - c
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * v


def _rasterise(outline: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon, polygon_perimeter

    mask = np.zeros(hw, dtype=bool)
    rr, cc = polygon(outline[:, 0], outline[:, 1], shape=hw)
    mask[rr, cc] = True
    if not mask.any():  # thinner than a pixel: take the pixels its outline crosses
        rr, cc = polygon_perimeter(
            np.rint(outline[:, 0]), np.rint(outline[:, 1]), shape=hw, clip=False
        )
        keep = (rr >= 0) & (rr < hw[0]) & (cc >= 0) & (cc < hw[1])
        mask[rr[keep], cc[keep]] = True
    return mask


def _shapes_prompts(layer, image_layer, col: _Collector) -> None:
    n = len(layer.data)
    if n == 0:
        return
    classes = _classes(layer, n, "shape")
    matrix = layer_to_image(layer, image_layer)
    hw = col.geometry.hw
    for i, (vertices, kind) in enumerate(zip(layer.data, layer.shape_type, strict=True)):
        coords = _apply(matrix, vertices)
        if not np.isfinite(coords).all():
            raise PromptError(f"shape {i} of layer '{layer.name}' has NaN or infinite vertices")
        lead = coords[:, :-2]
        if lead.shape[1] and np.ptp(np.rint(lead), axis=0).max() > 0:
            raise PromptError(
                f"shape {i} of layer '{layer.name}' spans several frames; draw each shape on "
                "one frame (in the 2D view)"
            )
        frame = col.frame_of(lead[0], layer, "shape", i)
        rc = coords[:, -2:]
        label = classes[i]
        kind = str(kind)
        if kind in ("rectangle", "line", "path", "polyline"):
            col.check_inside(rc, layer, f"{kind} shape", i, frame)
        if kind == "rectangle":
            (r0, c0), (r1, c1) = rc.min(axis=0), rc.max(axis=0)
            prompt = _make(Box, (r0, c0, r1, c1), label, layer, i, frame, col)
            col.add_prompt(frame, prompt, layer)
        elif kind in ("line", "path", "polyline"):
            col.add_prompt(frame, _make(Scribble, rc, label, layer, i, frame, col), layer)
        elif kind in ("polygon", "ellipse"):
            outline = _ellipse_outline(rc) if kind == "ellipse" else rc
            mask = _rasterise(outline, hw)
            if not mask.any():
                raise PromptError(
                    f"{kind} shape {i} of layer '{layer.name}' does not cover any pixel of the "
                    f"image on {col.geometry.describe(frame)}"
                )
            col.add_mask(frame, label, mask, layer)
        else:
            raise PromptError(
                f"shape {i} of layer '{layer.name}' is a {kind}, which SANSA cannot use: draw "
                "rectangles (boxes), paths or lines (scribbles), polygons or ellipses (masks)"
            )


def _make(cls, value, label, layer, i, frame, col):
    try:
        return cls(value, label=label)
    except InvalidInputError as exc:
        raise PromptError(
            f"shape {i} of layer '{layer.name}' on {col.geometry.describe(frame)}: {exc}"
        ) from None


def _labels_prompts(layer, col: _Collector) -> None:
    data = layer.data
    g = col.geometry
    if np.dtype(data.dtype).kind not in "iub":
        raise PromptError(
            f"the Labels layer '{layer.name}' has dtype {data.dtype}; class ids must be integers"
        )
    if isinstance(data, np.ndarray):
        flat = data.reshape(g.n_frames, -1)
        frames = np.flatnonzero(flat.any(axis=1)).tolist()
    else:  # dask, zarr, ...: read frame by frame
        frames = [f for f in range(g.n_frames) if np.asarray(data[g.index(f)]).any()]
    for frame in frames:
        plane = np.asarray(data[g.index(frame)])
        values = np.unique(plane)
        values = values[values != 0]
        if values.size and values.min() < 0:
            raise PromptError(
                f"the Labels layer '{layer.name}' has negative values on {g.describe(frame)}; "
                "class ids must be >= 1 (0 is background)"
            )
        for c in values.tolist():
            col.add_mask(frame, int(c), plane == c, layer)


def prompts_from_layers(image_layer, layers) -> tuple[FramePrompts, ...]:
    """The prompts drawn in ``layers`` for ``image_layer``, grouped by frame.

    Raises :class:`PromptError` (a ValueError) with a message naming the layer,
    the item and what to change, for a layer that does not fit the image or a
    prompt that cannot be used. The layers are only read.
    """
    from napari.layers import Labels, Points, Shapes

    col = _Collector(image_geometry(image_layer))
    for layer in layers:
        problem = fit_problem(image_layer, layer)
        if problem is not None:
            raise PromptError(problem)
        if isinstance(layer, Points):
            _points_prompts(layer, image_layer, col)
        elif isinstance(layer, Shapes):
            _shapes_prompts(layer, image_layer, col)
        elif isinstance(layer, Labels):
            _labels_prompts(layer, col)
        else:
            raise PromptError(
                f"layer '{layer.name}' is a {type(layer).__name__} layer; prompts come from "
                "Points, Shapes and Labels layers"
            )
    return col.result()


# -- run plan ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunPlan:
    """What one run does: the image's frames, the reference frames and the targets."""

    stack: FrameStack
    references: tuple[FramePrompts, ...]
    targets: tuple[int, ...]
    intensity_range: tuple[float, float] | None

    @property
    def geometry(self) -> StackGeometry:
        return self.stack.geometry

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({c for r in self.references for c in r.classes}))

    @property
    def labels_dtype(self):
        """The smallest unsigned dtype holding every class id of the run."""
        return np.uint8 if max(self.classes) < 256 else np.uint16

    @property
    def total(self) -> int:
        """Frames the run yields: the decoded references, then the targets."""
        return len(self.references) + len(self.targets)


def intensity_range(image_layer) -> tuple[float, float] | None:
    """The layer's contrast limits for non-uint8 data, so every frame is scaled as shown."""
    dtype = np.dtype(image_data(image_layer).dtype)
    if dtype in (np.uint8, np.bool_):
        return None
    lo, hi = (float(v) for v in image_layer.contrast_limits)
    return (lo, hi) if hi > lo else None


def make_plan(image_layer, prompt_layers, frame_range: tuple[int, int] | None = None) -> RunPlan:
    """Read the image and prompt layers into a :class:`RunPlan`, or raise PromptError.

    ``frame_range``: ``(first, last)`` frame numbers, inclusive, of the frames to
    label; by default all frames without prompts.
    """
    if image_layer is None:
        raise PromptError("there is no image layer: open an image (a 2D image or a stack) first")
    geometry = image_geometry(image_layer)
    layers = list(prompt_layers)
    if not layers:
        raise PromptError(
            "no prompt layers are selected: mark the objects on one or a few frames in a "
            "Points, Shapes or Labels layer and select it under 'prompt layers'"
        )
    refs = prompts_from_layers(image_layer, layers)
    if not refs:
        raise PromptError(
            f"the prompt layers ({_names(layer.name for layer in layers)}) hold no prompts "
            f"for '{image_layer.name}': click, draw or paint the objects on at least one frame"
        )
    ref_frames = {r.frame for r in refs}
    n = geometry.n_frames
    first, last = (0, n - 1) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    first, last = max(first, 0), min(last, n - 1)
    if first > last:
        raise PromptError(
            f"the frame range {first}..{last} is empty: the image has frames 0..{n - 1}"
        )
    targets = tuple(f for f in range(first, last + 1) if f not in ref_frames)
    if not targets:
        if n == 1:
            raise PromptError(
                f"'{image_layer.name}' is a single image and it holds the prompts, so nothing is "
                "left to label: open a stack (frames along the first axis) and mark one or a "
                "few of its frames"
            )
        where = (
            "every frame" if (first, last) == (0, n - 1) else f"every frame from {first} to {last}"
        )
        raise PromptError(
            f"{where} of '{image_layer.name}' has prompts, so nothing is left to label: "
            "leave the frames SANSA should label without prompts"
        )
    return RunPlan(
        FrameStack(image_data(image_layer), geometry),
        refs,
        targets,
        intensity_range(image_layer),
    )


# -- layers the widget makes ---------------------------------------------------------


def points_layer_kwargs(ndim: int, label: int = 1, positive: bool = True) -> dict:
    """Keyword arguments of a Points layer set up for prompts: class and polarity
    features, green positive and red negative clicks, the class id as text."""
    import pandas as pd

    return {
        "ndim": ndim,
        "features": pd.DataFrame(
            {"label": pd.Series([], dtype="int64"), "positive": pd.Series([], dtype=bool)}
        ),
        "feature_defaults": {"label": int(label), "positive": bool(positive)},
        "face_color": "positive",
        "face_color_cycle": {True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        "border_color": "white",
        "size": 8,
        "text": {"string": "{label}", "color": "white", "anchor": "upper_left", "size": 9},
    }


def shapes_layer_kwargs(ndim: int, label: int = 1) -> dict:
    """Keyword arguments of a Shapes layer set up for prompts (class feature shown as text)."""
    import pandas as pd

    return {
        "ndim": ndim,
        "features": pd.DataFrame({"label": pd.Series([], dtype="int64")}),
        "feature_defaults": {"label": int(label)},
        "face_color": "transparent",
        "edge_color": "yellow",
        "edge_width": 2,
        "text": {"string": "{label}", "color": "yellow", "anchor": "upper_left", "size": 9},
    }
