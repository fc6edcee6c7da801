"""Prompt objects: what a person marked on a reference image.

Coordinates follow numpy and napari: ``(row, col)``, in pixels of the image the
prompt belongs to, pixel centres at integers. Class labels are integers >= 1.

Every prompt validates itself when it is made and keeps a read-only copy of its
arrays, so the caller's arrays are never modified and a prompt cannot change
after it was checked.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.fusion import check_label_limit
from napari_sansa.core.images import image_hw

__all__ = [
    "MAX_POINTS",
    "MAX_SCRIBBLE_VERTICES",
    "Box",
    "Mask",
    "Points",
    "Prompt",
    "Reference",
    "Scribble",
    "check_label",
]

#: The most clicks one ``Points`` prompt may hold (each is a token of SAM2's decoder).
MAX_POINTS = 10_000
#: The most vertices one ``Scribble`` may have (it is then sampled into at most
#: ``napari_sansa.core.preprocess.MAX_SCRIBBLE_POINTS`` clicks).
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


@dataclass(frozen=True, eq=False)
class Mask:
    """A painted mask: every nonzero pixel belongs to the object of class ``label``."""

    mask: np.ndarray
    label: int = 1

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

    def __repr__(self) -> str:
        return f"Mask(shape={self.mask.shape}, pixels={int(self.mask.sum())}, label={self.label})"


@dataclass(frozen=True, eq=False)
class Points:
    """Clicks as ``(row, col)`` coordinates; ``positive[i]`` False makes click i negative."""

    coords: np.ndarray
    label: int = 1
    positive: np.ndarray | None = None

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

    def __repr__(self) -> str:
        return (
            f"Points(n={len(self.coords)}, negative={int((~self.positive).sum())}, "
            f"label={self.label})"
        )


@dataclass(frozen=True, eq=False)
class Box:
    """A rectangle ``(min_row, min_col, max_row, max_col)`` around the object."""

    box: tuple
    label: int = 1

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


@dataclass(frozen=True, eq=False)
class Scribble:
    """A stroke through the object as a polyline of ``(row, col)`` vertices.

    The engine samples it densely (about one point per pixel of the model's input
    grid) into positive clicks, as the authors' scribble prompts do; a stroke longer
    than ``MAX_SCRIBBLE_POINTS`` pixels gets that many clicks spread evenly along it.
    At most ``MAX_SCRIBBLE_VERTICES`` vertices.
    """

    path: np.ndarray
    label: int = 1

    def __post_init__(self):
        label = check_label(self.label)
        path = _coords(self.path, "scribble vertices", label, MAX_SCRIBBLE_VERTICES)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "label", label)

    def __repr__(self) -> str:
        return f"Scribble(vertices={len(self.path)}, label={self.label})"


Prompt = Mask | Points | Box | Scribble
_PROMPT_TYPES = (Mask, Points, Box, Scribble)


def _prompt_coords(prompt) -> np.ndarray | None:
    if isinstance(prompt, Points):
        return prompt.coords
    if isinstance(prompt, Scribble):
        return prompt.path
    if isinstance(prompt, Box):
        r0, c0, r1, c1 = prompt.box
        return np.array([[r0, c0], [r1, c1]])
    return None


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
        if isinstance(prompts, _PROMPT_TYPES):
            prompts = (prompts,)
        if not isinstance(prompts, Iterable) or isinstance(prompts, (str, bytes)):
            raise InvalidInputError(
                "prompts must be a list of napari_sansa.Mask/Points/Box/Scribble objects"
            )
        prompts = tuple(prompts)
        for p in prompts:
            if not isinstance(p, _PROMPT_TYPES):
                raise InvalidInputError(
                    f"{p!r} is not a prompt: use napari_sansa.Mask, Points, Box or Scribble"
                )
        if not prompts:
            raise InvalidInputError(
                "a reference needs at least one prompt (a mask, points, a box or a scribble)"
            )
        h, w = image_hw(self.image, what="reference image")
        for p in prompts:
            if isinstance(p, Mask) and p.mask.shape != (h, w):
                raise InvalidInputError(
                    f"the mask of class {p.label} has shape {p.mask.shape} but its reference "
                    f"image is {h}x{w}: masks must have the image's (rows, cols)"
                )
            coords = _prompt_coords(p)
            if coords is None:
                continue
            bad = (
                (coords[:, 0] < -0.5)
                | (coords[:, 0] > h)
                | (coords[:, 1] < -0.5)
                | (coords[:, 1] > w)
            )
            if bad.any():
                r, c = coords[np.argmax(bad)]
                kind = type(p).__name__.lower()
                raise InvalidInputError(
                    f"a {kind} prompt of class {p.label} lies outside the {h}x{w} reference "
                    f"image at (row={r:g}, col={c:g}); rows must be within [-0.5, {h}] and "
                    f"columns within [-0.5, {w}]"
                )
        for label in {p.label for p in prompts}:
            kinds = {type(p) for p in prompts if p.label == label}
            if Mask in kinds and len(kinds) > 1:
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
