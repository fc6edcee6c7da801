"""The run plan: which frames are references, which are labelled, read from layers once."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.fusion import label_dtype
from napari_sansa.core.memory import NUM_MASKMEM, reach
from napari_sansa.napari.geometry import (
    FrameStack,
    PromptError,
    StackGeometry,
    image_data,
    image_geometry,
    multiscale_problem,
    size_problem,
)
from napari_sansa.napari.layers import FramePrompts, prompts_from_layers, quoted_names

__all__ = [
    "MEMORY_FRAMES",
    "NO_IMAGE",
    "RunPlan",
    "frames_in_range",
    "intensity_range",
    "make_plan",
    "memory_note",
    "plan_image",
]

NO_IMAGE = "there is no image layer: open an image (a 2D image or a stack) first"

#: SAM2's memory bank: the first reference and the last six before a target
MEMORY_FRAMES = NUM_MASKMEM


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
        """The smallest unsigned dtype holding every class id of the run (the core's rule)."""
        return label_dtype(max(self.classes))

    def pointer_only(self) -> dict[int, tuple[int, ...]]:
        """Per class, the reference frames that reach the targets only through object
        pointers, not through SAM2's memory bank (the core's rule: the class's first
        reference and its last six are in memory), in frame order."""
        out = {}
        for c in self.classes:
            frames = [r.frame for r in self.references if c in r.classes]
            seen = reach(len(frames))
            if seen["pointer"] or seen["none"]:
                out[c] = tuple(frames[i] for i in sorted(seen["pointer"] + seen["none"]))
        return out

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


def _is_flat(frame_range) -> bool:
    return (
        not isinstance(frame_range, Mapping)
        and len(frame_range) == 2
        and all(isinstance(v, (int, np.integer)) for v in frame_range)
    )


def _axis_position(geometry: StackGeometry, axis, name: str) -> int:
    """A frame axis given by its position among the leading axes or by its name."""
    axes = geometry.frame_axes
    if isinstance(axis, str):
        found = [k for k in axes if geometry.axis_name(k) == axis]
        if found:
            return found[0]
    elif isinstance(axis, (int, np.integer)) and int(axis) in axes:
        return int(axis)
    have = ", ".join(f"{geometry.axis_name(k)} ({geometry.leading[k]})" for k in axes)
    raise PromptError(
        f"{axis!r} is not a frame axis of '{name}' (its frame axes: {have or 'none'}): give "
        "ranges for those axes"
    )


def _per_axis(geometry: StackGeometry, frame_range, name: str) -> dict[int, tuple[int, int]]:
    """``{axis position: (first, last)}`` from a mapping (axis position or name ->
    range) or a sequence of ranges, one per frame axis; checked against the axes."""
    axes = geometry.frame_axes
    if isinstance(frame_range, Mapping):
        given = {_axis_position(geometry, k, name): v for k, v in frame_range.items()}
    else:
        ranges = list(frame_range)
        if len(ranges) != len(axes):
            raise PromptError(
                f"'{name}' has {len(axes)} frame axes, but {len(ranges)} frame ranges were "
                "given: give one (first, last) range per frame axis"
            )
        given = dict(zip(axes, ranges, strict=True))
    out = {}
    for k in axes:
        size = geometry.leading[k]
        first, last = (0, size - 1) if given.get(k) is None else (int(v) for v in given[k])
        if not 0 <= first <= last < size:
            what = "is empty" if first > last else "is outside the axis"
            raise PromptError(
                f"the range {first}..{last} of {geometry.axis_name(k)} in '{name}' {what}: "
                f"it has {geometry.axis_name(k)} 0..{size - 1}; choose first <= last within those"
            )
        out[k] = (first, last)
    return out


def frames_in_range(geometry: StackGeometry, frame_range, name: str = "image") -> tuple[int, ...]:
    """The frame numbers of ``frame_range``, in frame order (raises PromptError).

    ``frame_range``: None (every frame); per axis, a mapping from a frame axis (its
    position among the leading axes, or its name such as ``"z"``) to an inclusive
    ``(first, last)`` (axes left out: all of theirs), or a sequence with one such range
    per frame axis; the frames are the product of the ranges. A flat ``(first, last)``
    pair of frame numbers (``t * Z + z`` on a T x Z stack) is also taken, clipped to
    the frames, as on a stack with one frame axis.
    """
    n = geometry.n_frames
    if frame_range is None:
        return tuple(range(n))
    if _is_flat(frame_range):
        first, last = max(int(frame_range[0]), 0), min(int(frame_range[1]), n - 1)
        if first > last:
            raise PromptError(
                f"the frame range {first}..{last} is empty: the image has frames 0..{n - 1}"
            )
        return tuple(range(first, last + 1))
    ranges = _per_axis(geometry, frame_range, name)
    if not ranges:
        return tuple(range(n))
    axes = geometry.frame_axes
    index = itertools.product(*(range(a, b + 1) for a, b in (ranges[k] for k in axes)))
    return tuple(int(np.ravel_multi_index(at, geometry.frame_sizes)) for at in index)


def range_text(geometry: StackGeometry, frame_range) -> str | None:
    """Where the range lies, for messages ("from 4 to 6", "in t 0..1, z 2..3"); None:
    every frame."""
    n = geometry.n_frames
    if frame_range is None:
        return None
    if _is_flat(frame_range):
        first, last = max(int(frame_range[0]), 0), min(int(frame_range[1]), n - 1)
        return None if (first, last) == (0, n - 1) else f"from {first} to {last}"
    ranges = _per_axis(geometry, frame_range, "")
    if all(ranges[k] == (0, geometry.leading[k] - 1) for k in ranges):
        return None
    return "in " + ", ".join(f"{geometry.axis_name(k)} {a}..{b}" for k, (a, b) in ranges.items())


def plan_image(image_layer, prompt_layers, frame_range=None) -> RunPlan:
    """One image's references (from ``prompt_layers``, possibly none) and targets (the
    frames of ``frame_range`` without prompts, possibly none; see
    :func:`frames_in_range`); raises PromptError for a layer or range that cannot be
    read so."""
    if image_layer is None:
        raise PromptError(NO_IMAGE)
    problem = multiscale_problem(image_layer)
    if problem is not None:
        raise PromptError(problem)
    geometry = image_geometry(image_layer)
    problem = size_problem(image_layer)
    if problem is not None:
        raise PromptError(problem)
    frames = frames_in_range(geometry, frame_range, image_layer.name)
    layers = list(prompt_layers)
    refs = prompts_from_layers(image_layer, layers) if layers else ()
    ref_frames = {r.frame for r in refs}
    targets = tuple(f for f in frames if f not in ref_frames)
    return RunPlan(
        FrameStack(
            image_data(image_layer),
            geometry,
            name=image_layer.name,
            windows=bool(image_layer.multiscale),  # levels are read by windows (tiles)
        ),
        refs,
        targets,
        intensity_range(image_layer),
    )


def no_layers_problem() -> str:
    return (
        "no prompt layers are selected: mark the objects on one or a few frames in a "
        "Points, Shapes or Labels layer and select it under 'prompt layers'"
    )


def make_plan(image_layer, prompt_layers, frame_range=None) -> RunPlan:
    """Read the image and prompt layers into a :class:`RunPlan`, or raise PromptError.

    ``frame_range``: the frames to label, per frame axis (``{"t": (0, 4), "z": (2, 3)}``,
    or one ``(first, last)`` per frame axis) or as flat ``(first, last)`` frame numbers,
    inclusive (see :func:`frames_in_range`); by default all frames without prompts.
    References count wherever they are.
    """
    if image_layer is None:
        raise PromptError(NO_IMAGE)
    layers = list(prompt_layers)
    if not layers:
        raise PromptError(no_layers_problem())
    plan = plan_image(image_layer, layers, frame_range)
    if not plan.references:
        raise PromptError(
            f"the prompt layers ({quoted_names(layer.name for layer in layers)}) hold no prompts "
            f"for '{image_layer.name}': click, draw or paint the objects on at least one frame"
        )
    n = plan.geometry.n_frames
    if not plan.targets:
        if n == 1:
            raise PromptError(
                f"'{image_layer.name}' is a single image and it holds the prompts, so nothing is "
                "left to label: choose the other images to label under 'with images', or open "
                "a stack (frames along the first axis) and mark one or a few of its frames"
            )
        within = range_text(plan.geometry, frame_range)
        where = "every frame" if within is None else f"every frame {within}"
        raise PromptError(
            f"{where} of '{image_layer.name}' has prompts, so nothing is left to label: "
            "leave the frames SANSA should label without prompts"
        )
    return plan


def memory_note(plan: RunPlan) -> str | None:
    """A sentence for the person when a class has more than 7 references (None otherwise)."""
    parts = []
    for c, frames in plan.pointer_only().items():
        k = sum(1 for r in plan.references if c in r.classes)
        where = (
            f"frame {frames[0]} reaches"
            if len(frames) == 1
            else (f"frames {', '.join(str(f) for f in frames)} reach")
        )
        unseen = frames[: len(reach(k)["none"])]  # the earliest ones, after the first
        extra = (
            f" (frames {', '.join(str(f) for f in unseen)} not even through those)"
            if unseen
            else ""
        )
        parts.append(
            f"class {c} has {k} reference frames: SAM2's memory keeps its first and last six, "
            f"so {where} the other frames only through object pointers{extra}"
        )
    if not parts:
        return None
    return "; ".join(parts) + (
        ". Keep at most 7 reference frames per class, or remove the least useful ones"
    )
