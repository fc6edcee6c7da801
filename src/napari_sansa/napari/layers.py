"""napari layers -> SANSA prompts: the one place where prompt layers become core objects.

Everything here runs on the main thread and returns plain, frozen values (the
core's prompt objects grouped by frame in :class:`FramePrompts`) that a worker can
use without touching a layer or Qt. Frames and transforms: :mod:`.geometry`.

Prompt layers live in their own data coordinates. Points and Shapes are mapped to
the image's data coordinates through both layers' transforms; the leading
coordinates are rounded to a frame index. A prompt Labels layer must have the
image's shape (without the colour axis) and the same transform, so that a painted
pixel is an image pixel.

* Labels: every nonzero value is a class id; its pixels are a mask of that class.
* Points: class from the feature column ``label`` (default 1), polarity from the
  feature column ``positive`` (default True: a click on the object).
* Shapes: rectangle -> Box, line/path/polyline -> Scribble, polygon/ellipse ->
  Mask (rasterised); class from the feature column ``label`` (default 1).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from napari_sansa.core import Box, InvalidInputError, Mask, Points, Reference, Scribble
from napari_sansa.napari.geometry import (
    PromptError,
    StackGeometry,
    apply_matrix,
    fit_problem,
    image_geometry,
    labels_on_image,
    layer_to_image,
)

__all__ = ["FramePrompts", "quoted_names", "prompts_from_layers"]

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
        return {p.label: p.mask for p in self.prompts if not p.sparse}


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
                    f"(layers {quoted_names(self.sources[frame])}); add at least one positive "
                    "click on the object"
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
                where = quoted_names(self.sources[frame])
                raise PromptError(
                    f"{self.geometry.describe(frame)} (layers {where}): {exc}"
                ) from None
            out.append(FramePrompts(frame, prompts))
        return tuple(out)


def quoted_names(items) -> str:
    return ", ".join(f"'{n}'" for n in sorted(items))


def _points_prompts(layer, image_layer, col: _Collector) -> None:
    data = np.asarray(layer.data, dtype=float)
    n = len(data)
    if n == 0:
        return
    classes = _classes(layer, n, "point")
    positive = _polarities(layer, n)
    coords = apply_matrix(layer_to_image(layer, image_layer), data)
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
        coords = apply_matrix(matrix, vertices)
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


def _labels_prompts(layer, image_layer, col: _Collector) -> None:
    data, problem = labels_on_image(layer, image_layer)
    if problem is not None:  # pragma: no cover - fit_problem said so first
        raise PromptError(problem)
    g = col.geometry
    if np.dtype(data.dtype).kind not in "iub":
        raise PromptError(
            f"the Labels layer '{layer.name}' has dtype {data.dtype}; class ids must be integers"
        )
    if isinstance(data, np.ndarray) and g.channel_axis is None:
        flat = data.reshape(g.n_frames, -1)
        frames = np.flatnonzero(flat.any(axis=1)).tolist()
    else:  # dask, zarr, a channel axis ...: read frame by frame
        frames = [f for f in range(g.n_frames) if np.asarray(data[g.index(f)]).any()]
    for frame in frames:
        plane = g.plane(data, frame)  # with a channel axis: painted on any channel
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
            _labels_prompts(layer, image_layer, col)
        else:
            raise PromptError(
                f"layer '{layer.name}' is a {type(layer).__name__} layer; prompts come from "
                "Points, Shapes and Labels layers"
            )
    return col.result()
