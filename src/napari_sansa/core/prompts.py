"""Prompt objects: what a person marked on a reference image.

Coordinates follow numpy and napari: ``(row, col)``, in pixels of the image the
prompt belongs to, pixel centres at integers. Class labels are integers >= 1.

Every prompt validates itself when it is made and keeps a read-only copy of its
arrays, so the caller's arrays are never modified and a prompt cannot change
after it was checked.

Each prompt class knows itself, so that no other module asks a prompt its type:
every prompt says whether it is ``sparse`` (SAM2 decodes it from clicks) or not (a
mask, taken as it is), checks that it lies on its image (``check_within``), gives what
a tile gets of it (``clip``), its ``fingerprint`` and its key in a prompt file
(``json_key``; masks are a label image there). Points, boxes and scribbles also give
their ``coordinates``, their clicks for SAM2 (``sam_points``) and their JSON form
(``to_json``, ``from_json``; see docs/cli.md). :data:`PROMPT_CLASSES` lists them all.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.fusion import check_label_limit
from napari_sansa.core.images import image_hw
from napari_sansa.core.sam_points import (
    BOX_BOTTOM_RIGHT,
    BOX_TOP_LEFT,
    NEGATIVE,
    POSITIVE,
    densify_path,
    to_sam_xy,
)

__all__ = [
    "MAX_POINTS",
    "MAX_SCRIBBLE_VERTICES",
    "PROMPT_CLASSES",
    "PROMPT_FILE_DOC",
    "Box",
    "Mask",
    "Points",
    "Prompt",
    "Reference",
    "Scribble",
    "check_json_keys",
    "check_label",
    "shown_json",
]

#: The most clicks one ``Points`` prompt may hold (each is a token of SAM2's decoder).
MAX_POINTS = 10_000
#: The most vertices one ``Scribble`` may have (it is then sampled into at most
#: ``napari_sansa.core.sam_points.MAX_SCRIBBLE_POINTS`` clicks).
MAX_SCRIBBLE_VERTICES = 100_000


def check_label(label, what: str = "label") -> int:
    """Return ``label`` as a Python int, or raise if it is not an integer >= 1.

    Booleans (Python's and numpy's) are refused: True is no class id, though it equals 1.
    """
    if isinstance(label, (bool, np.bool_)):
        raise InvalidInputError(
            f"{what} must be an integer class id >= 1 (0 is background), got the boolean "
            f"{bool(label)!r}: give the class as a number, e.g. 1"
        )
    if not isinstance(label, numbers.Integral):
        if isinstance(label, numbers.Real) and float(label).is_integer() and label >= 1:
            return check_label_limit(int(label), what)
        raise InvalidInputError(
            f"{what} must be an integer class id >= 1 (0 is background), got {label!r}"
        )
    if label < 1:
        raise InvalidInputError(
            f"{what} must be an integer class id >= 1 (0 is background), got {int(label)}"
        )
    return check_label_limit(int(label), what)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


def _coords(values, name: str, label: int, limit: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} of class {label} must be numbers as (row, col) pairs: {exc}"
        ) from None
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise InvalidInputError(
            f"{name} of class {label} must have shape (N, 2) with N >= 1 as (row, col) "
            f"pairs, got shape {np.shape(values)}"
        )
    if len(arr) > limit:
        raise InvalidInputError(
            f"{name} of class {label}: {len(arr)} given, at most {limit} allowed; "
            "simplify the prompt (fewer vertices or clicks)"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} of class {label} contain NaN or infinite coordinates")
    return _frozen(arr)


#: where the prompt file's form is described, for error messages
PROMPT_FILE_DOC = "see the prompt file format in docs/cli.md"


def shown_json(value) -> str:
    """A JSON value as an error message shows it (at most 60 characters)."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_json_keys(obj: dict, allowed, where: str) -> None:
    """Refuse the keys of a prompt file's object that are not ``allowed``."""
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown key(s) {', '.join(map(shown_json, unknown))}; the keys there "
            f"are {', '.join(map(shown_json, allowed))} ({PROMPT_FILE_DOC})"
        )


def _json_number(value, name: str, where: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        ok = ok and bool(np.isfinite(float(value)))
    except OverflowError:
        ok = False
    if not ok:
        raise InvalidInputError(
            f'{where}: "{name}" must be a finite number, got {shown_json(value)}'
        )
    return float(value)


def _json_pairs(value, name: str, where: str) -> list:
    ok = isinstance(value, list) and value
    ok = ok and all(isinstance(v, list) and len(v) == 2 for v in value)
    if not ok:
        raise InvalidInputError(
            f'{where}: "{name}" must be a list of [ROW, COL] pairs, e.g. [[20, 100], '
            f"[40, 110]], got {shown_json(value)}"
        )
    return [[_json_number(r, name, where), _json_number(c, name, where)] for r, c in value]


def _json_label(item: dict, where: str) -> int:
    try:
        return check_label(item.get("label", 1))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def _runs(flags: np.ndarray) -> list[slice]:
    """Slices of the runs of True in a 1D boolean array."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True)]


class _Sparse:
    """What points, boxes and scribbles share: SAM2 decodes them from clicks, they lie
    at ``coordinates`` of their image, and a prompt file lists them under ``json_key``
    as objects with the keys ``json_fields`` (``json_form`` shows one)."""

    sparse = True
    json_key: str
    json_fields: tuple
    json_form: str

    @property
    def coordinates(self) -> np.ndarray:
        """The prompt's ``(row, col)`` points (clicks, vertices, corners), ``(N, 2)``."""
        raise NotImplementedError

    def check_within(self, hw) -> None:
        """Raise unless the prompt lies on an ``hw`` image (within half a pixel)."""
        h, w = hw
        coords = self.coordinates
        bad = (
            (coords[:, 0] < -0.5) | (coords[:, 0] > h) | (coords[:, 1] < -0.5) | (coords[:, 1] > w)
        )
        if bad.any():
            r, c = coords[np.argmax(bad)]
            kind = type(self).__name__.lower()
            raise InvalidInputError(
                f"a {kind} prompt of class {self.label} lies outside the {h}x{w} reference "
                f"image at (row={r:g}, col={c:g}); rows must be within [-0.5, {h}] and "
                f"columns within [-0.5, {w}]"
            )

    @classmethod
    def check_json(cls, value, where: str) -> list:
        """The list of this kind's objects in a prompt file's reference entry (``None``:
        none), checked for its form (a list of objects with known keys)."""
        if value is None:
            return []
        key, form = cls.json_key, cls.json_form
        if not isinstance(value, list):
            raise InvalidInputError(
                f'{where}: "{key}" must be a list of {form}, got {shown_json(value)}'
            )
        for j, item in enumerate(value):
            if not isinstance(item, dict):
                raise InvalidInputError(
                    f"{where}, {key}[{j}] must be {form}, got {shown_json(item)}"
                )
            check_json_keys(item, cls.json_fields, f"{where}, {key}[{j}]")
        return value

    @classmethod
    def _json_args(cls, item: dict, at: str) -> tuple:
        """The arguments (all but the label) of the prompt that one JSON object gives."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, value, where: str) -> list:
        """The prompts of this kind a prompt file's entry lists (``value``, the list under
        :attr:`json_key`); errors name ``where`` and the entry."""
        items = cls.check_json(value, where)
        return cls._from_json_items(items, where)

    @classmethod
    def _from_json_items(cls, items: list, where: str) -> list:
        prompts = []
        for j, item in enumerate(items):
            at = f"{where}, {cls.json_key}[{j}]"
            args, label = cls._json_args(item, at), _json_label(item, at)
            try:
                prompts.append(cls(*args, label=label))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{at}: {exc}") from None
        return prompts


@dataclass(frozen=True, eq=False)
class Mask:
    """A painted mask: every nonzero pixel belongs to the object of class ``label``."""

    mask: np.ndarray
    label: int = 1

    #: a mask is taken as it is; SAM2 decodes no clicks
    sparse = False
    #: in a prompt file, masks are a label image (one class per value) named by "labels",
    #: read by :mod:`napari_sansa.dataset`
    json_key = "labels"

    def __post_init__(self):
        label = check_label(self.label)
        arr = np.asarray(self.mask)
        if arr.ndim != 2:
            raise InvalidInputError(
                f"the mask of class {label} must be 2D (rows, cols), got shape {arr.shape}"
            )
        if arr.size == 0:
            raise InvalidInputError(f"the mask of class {label} has no pixels")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInputError(f"the mask of class {label} contains NaN or infinite values")
        binary = arr != 0
        if not binary.any():
            raise InvalidInputError(
                f"the mask of class {label} is empty: paint at least one pixel, "
                "or remove this prompt"
            )
        binary.flags.writeable = False
        object.__setattr__(self, "mask", binary)
        object.__setattr__(self, "label", label)

    def check_within(self, hw) -> None:
        """Raise unless the mask has the ``hw`` image's (rows, cols)."""
        h, w = hw
        if self.mask.shape != (h, w):
            raise InvalidInputError(
                f"the mask of class {self.label} has shape {self.mask.shape} but its reference "
                f"image is {h}x{w}: masks must have the image's (rows, cols)"
            )

    def clip(self, tile, hw) -> list:
        """What ``tile`` gets of the mask: its crop to the tile's window, when the tile's own
        part holds some of it (else nothing)."""
        if not self.mask[tile.own_rows, tile.own_cols].any():
            return []
        return [Mask(self.mask[tile.rows, tile.cols], self.label)]

    def fingerprint(self) -> bytes:
        """Bytes that differ between prompts that differ (kind, class, pixels)."""
        return b"Mask" + str(self.label).encode() + np.ascontiguousarray(self.mask).tobytes()

    def __repr__(self) -> str:
        return f"Mask(shape={self.mask.shape}, pixels={int(self.mask.sum())}, label={self.label})"


@dataclass(frozen=True, eq=False)
class Points(_Sparse):
    """Clicks as ``(row, col)`` coordinates; ``positive[i]`` False makes click i negative."""

    coords: np.ndarray
    label: int = 1
    positive: np.ndarray | None = None

    json_key = "points"
    json_fields = ("row", "col", "label", "positive")
    json_form = '{"row": ROW, "col": COL} (optionally "label": 1 and "positive": true)'

    def __post_init__(self):
        label = check_label(self.label)
        coords = _coords(self.coords, "points", label, MAX_POINTS)
        if self.positive is None:
            positive = np.ones(len(coords), dtype=bool)
        else:
            raw = np.atleast_1d(np.asarray(self.positive))
            if raw.dtype == bool:
                positive = raw
            elif raw.dtype.kind in "iuf" and np.isin(raw, (0, 1)).all():
                positive = raw.astype(bool)
            else:
                raise InvalidInputError(
                    f"positive flags of class {label} must be True/False (or 1/0), "
                    f"got {raw.tolist()!r}"
                )
            if raw.shape != (len(coords),):
                raise InvalidInputError(
                    f"class {label} has {len(coords)} points but {raw.size} positive flags; "
                    "give one flag per point"
                )
        if not positive.any():
            raise InvalidInputError(
                f"all points of class {label} are negative: add at least one positive "
                "click on the object"
            )
        object.__setattr__(self, "coords", coords)
        object.__setattr__(self, "positive", _frozen(positive))
        object.__setattr__(self, "label", label)

    @property
    def coordinates(self) -> np.ndarray:
        return self.coords

    def sam_points(self, hw, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """SAM2's clicks on the model's ``image_size`` grid: ``(x, y)`` and their labels."""
        return (
            to_sam_xy(self.coords, hw, image_size),
            np.where(self.positive, POSITIVE, NEGATIVE),
        )

    def clip(self, tile, hw) -> list:
        """What ``tile`` gets of the clicks: when its own part holds a positive click, every
        click inside its window, negative ones included, in the tile's coordinates (a
        negative click in a tile without a positive one has nothing to correct)."""
        if not (tile.owns(self.coords, hw) & self.positive).any():
            return []
        keep = tile.holds(self.coords)
        shift = np.array(tile.origin, dtype=np.float64)
        return [Points(self.coords[keep] - shift, self.label, self.positive[keep])]

    def fingerprint(self) -> bytes:
        """Bytes that differ between prompts that differ (kind, class, clicks)."""
        return (
            b"Points"
            + str(self.label).encode()
            + np.ascontiguousarray(self.coords).tobytes()
            + np.ascontiguousarray(self.positive).tobytes()
        )

    def to_json(self) -> list[dict]:
        """The clicks as a prompt file lists them under ``"points"``, one object each."""
        return [
            {"row": float(r), "col": float(c), "label": self.label, "positive": bool(f)}
            for (r, c), f in zip(self.coords, self.positive, strict=True)
        ]

    @classmethod
    def _from_json_items(cls, items: list, where: str) -> list:
        clicks: dict[int, tuple[list, list]] = {}  # clicks of one class form one prompt
        for j, item in enumerate(items):
            at = f"{where}, points[{j}]"
            for key in ("row", "col"):
                if key not in item:
                    raise InvalidInputError(f'{at} lacks "{key}": give {cls.json_form}')
            row, col = _json_number(item["row"], "row", at), _json_number(item["col"], "col", at)
            positive = item.get("positive", True)
            if not isinstance(positive, bool):
                raise InvalidInputError(
                    f'{at}: "positive" must be true or false (without quotes), got '
                    f"{shown_json(positive)}"
                )
            coords, flags = clicks.setdefault(_json_label(item, at), ([], []))
            coords.append([row, col])
            flags.append(positive)
        try:
            return [Points(c, label=label, positive=f) for label, (c, f) in clicks.items()]
        except InvalidInputError as exc:
            raise InvalidInputError(f'{where}, "points": {exc}') from None

    def __repr__(self) -> str:
        return (
            f"Points(n={len(self.coords)}, negative={int((~self.positive).sum())}, "
            f"label={self.label})"
        )


@dataclass(frozen=True, eq=False)
class Box(_Sparse):
    """A rectangle ``(min_row, min_col, max_row, max_col)`` around the object."""

    box: tuple
    label: int = 1

    json_key = "boxes"
    json_fields = ("box", "label")
    json_form = '{"box": [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL]} (optionally "label": 1)'

    def __post_init__(self):
        label = check_label(self.label)
        try:
            arr = np.asarray(self.box, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (4,):
            raise InvalidInputError(
                f"a box of class {label} must be 4 numbers (min_row, min_col, max_row, "
                f"max_col), got {self.box!r}"
            )
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"the box of class {label} has NaN or infinite corners")
        r0, r1 = sorted((arr[0], arr[2]))
        c0, c1 = sorted((arr[1], arr[3]))
        if r1 - r0 <= 0 or c1 - c0 <= 0:
            raise InvalidInputError(
                f"the box of class {label} is degenerate (height {r1 - r0:g}, width "
                f"{c1 - c0:g}): draw a rectangle with an area, or use a point instead"
            )
        object.__setattr__(self, "box", (float(r0), float(c0), float(r1), float(c1)))
        object.__setattr__(self, "label", label)

    @property
    def coordinates(self) -> np.ndarray:
        """The top-left and bottom-right corners, ``(row, col)``."""
        r0, c0, r1, c1 = self.box
        return np.array([[r0, c0], [r1, c1]])

    def sam_points(self, hw, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """SAM2's two box corners on the model's ``image_size`` grid and their labels."""
        return (
            to_sam_xy(self.coordinates, hw, image_size),
            np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]),
        )

    def clip(self, tile, hw) -> list:
        """What ``tile`` gets of the box: the box clipped to its window, in the tile's
        coordinates, when it overlaps the tile's own part (else nothing)."""
        b0, b1, b2, b3 = self.box
        own_rows, own_cols = tile.own_rows, tile.own_cols
        if min(b2, own_rows.stop) <= max(b0, own_rows.start) or min(b3, own_cols.stop) <= max(
            b1, own_cols.start
        ):
            return []
        r0, c0 = tile.origin
        clipped = (
            max(b0, tile.rows.start) - r0,
            max(b1, tile.cols.start) - c0,
            min(b2, tile.rows.stop) - r0,
            min(b3, tile.cols.stop) - c0,
        )
        return [Box(clipped, self.label)]

    def fingerprint(self) -> bytes:
        """Bytes that differ between prompts that differ (kind, class, corners)."""
        return b"Box" + str(self.label).encode() + str(self.box).encode()

    def to_json(self) -> list[dict]:
        """The box as a prompt file lists it under ``"boxes"``."""
        return [{"box": list(self.box), "label": self.label}]

    @classmethod
    def _json_args(cls, item: dict, at: str) -> tuple:
        box = item.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise InvalidInputError(
                f'{at}: "box" must be 4 numbers [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL], got '
                f"{shown_json(box)}"
            )
        return (tuple(_json_number(v, "box", at) for v in box),)


@dataclass(frozen=True, eq=False)
class Scribble(_Sparse):
    """A stroke through the object as a polyline of ``(row, col)`` vertices.

    The engine samples it densely (about one point per pixel of the model's input
    grid) into positive clicks, as the authors' scribble prompts do; a stroke longer
    than ``MAX_SCRIBBLE_POINTS`` pixels gets that many clicks spread evenly along it.
    At most ``MAX_SCRIBBLE_VERTICES`` vertices.
    """

    path: np.ndarray
    label: int = 1

    json_key = "scribbles"
    json_fields = ("path", "label")
    json_form = '{"path": [[ROW, COL], [ROW, COL], ...]} (optionally "label": 1)'

    def __post_init__(self):
        label = check_label(self.label)
        path = _coords(self.path, "scribble vertices", label, MAX_SCRIBBLE_VERTICES)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "label", label)

    @property
    def coordinates(self) -> np.ndarray:
        return self.path

    def sam_points(self, hw, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Positive clicks along the stroke, about one per pixel of the model's grid."""
        xy = densify_path(to_sam_xy(self.path, hw, image_size))
        return xy, np.full(len(xy), POSITIVE)

    def clip(self, tile, hw) -> list:
        """What ``tile`` gets of the stroke: sampled half a pixel apart, the runs inside its
        window, one scribble each, when its own part holds some of the stroke."""
        path = densify_path(self.path, spacing=0.5)
        if not tile.owns(path, hw).any():
            return []
        shift = np.array(tile.origin, dtype=np.float64)
        return [Scribble(path[run] - shift, self.label) for run in _runs(tile.holds(path))]

    def fingerprint(self) -> bytes:
        """Bytes that differ between prompts that differ (kind, class, vertices)."""
        return b"Scribble" + str(self.label).encode() + np.ascontiguousarray(self.path).tobytes()

    def to_json(self) -> list[dict]:
        """The stroke as a prompt file lists it under ``"scribbles"``."""
        return [{"path": self.path.tolist(), "label": self.label}]

    @classmethod
    def _json_args(cls, item: dict, at: str) -> tuple:
        return (_json_pairs(item.get("path"), "path", at),)

    def __repr__(self) -> str:
        return f"Scribble(vertices={len(self.path)}, label={self.label})"


Prompt = Mask | Points | Box | Scribble
#: every prompt class; each gives what the engine, the tiles and the prompt files need
PROMPT_CLASSES = (Mask, Points, Box, Scribble)


@dataclass(frozen=True, eq=False)
class Reference:
    """An image with the prompts a person marked on it.

    ``prompts`` may mix kinds and classes. Per class, use either masks (the mask is
    taken as it is) or points/boxes/scribbles (SAM2 decodes them into a mask), not
    both on the same image.
    """

    image: object
    prompts: tuple = field(default=())

    def __post_init__(self):
        prompts = self.prompts
        if isinstance(prompts, PROMPT_CLASSES):
            prompts = (prompts,)
        if not isinstance(prompts, Iterable) or isinstance(prompts, (str, bytes)):
            raise InvalidInputError(
                "prompts must be a list of napari_sansa.Mask/Points/Box/Scribble objects"
            )
        prompts = tuple(prompts)
        for p in prompts:
            if not isinstance(p, PROMPT_CLASSES):
                raise InvalidInputError(
                    f"{p!r} is not a prompt: use napari_sansa.Mask, Points, Box or Scribble"
                )
        if not prompts:
            raise InvalidInputError(
                "a reference needs at least one prompt (a mask, points, a box or a scribble)"
            )
        hw = image_hw(self.image, what="reference image")
        for p in prompts:
            p.check_within(hw)
        for label in {p.label for p in prompts}:
            if len({p.sparse for p in prompts if p.label == label}) > 1:
                raise InvalidInputError(
                    f"class {label} has both a mask and point/box/scribble prompts on the same "
                    "reference image: use the mask alone (it is taken as it is) or the clicks "
                    "alone (SAM2 decodes them)"
                )
        object.__setattr__(self, "prompts", prompts)

    @property
    def shape(self) -> tuple[int, int]:
        """The reference image's (rows, cols)."""
        return image_hw(self.image)

    @property
    def classes(self) -> tuple[int, ...]:
        """The class ids prompted on this reference, sorted."""
        return tuple(sorted({p.label for p in self.prompts}))

    def prompts_for(self, label: int) -> tuple:
        """The prompts of one class."""
        return tuple(p for p in self.prompts if p.label == label)

    def __repr__(self) -> str:
        h, w = self.shape
        return f"Reference(image={h}x{w}, prompts={list(self.prompts)!r})"
