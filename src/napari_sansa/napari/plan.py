"""The run plan: which frames are references, which are labelled, read from layers once."""

from __future__ import annotations

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
    size_problem,
)
from napari_sansa.napari.layers import FramePrompts, prompts_from_layers, quoted_names

__all__ = [
    "MEMORY_FRAMES",
    "NO_IMAGE",
    "RunPlan",
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


def plan_image(image_layer, prompt_layers, frame_range: tuple[int, int] | None = None) -> RunPlan:
    """One image's references (from ``prompt_layers``, possibly none) and targets (the
    frames of ``frame_range`` without prompts, possibly none); raises PromptError for a
    layer that cannot be read so."""
    if image_layer is None:
        raise PromptError(NO_IMAGE)
    geometry = image_geometry(image_layer)
    problem = size_problem(image_layer)
    if problem is not None:
        raise PromptError(problem)
    layers = list(prompt_layers)
    refs = prompts_from_layers(image_layer, layers) if layers else ()
    ref_frames = {r.frame for r in refs}
    n = geometry.n_frames
    first, last = (0, n - 1) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    first, last = max(first, 0), min(last, n - 1)
    if first > last:
        raise PromptError(
            f"the frame range {first}..{last} is empty: the image has frames 0..{n - 1}"
        )
    targets = tuple(f for f in range(first, last + 1) if f not in ref_frames)
    return RunPlan(
        FrameStack(image_data(image_layer), geometry, name=image_layer.name),
        refs,
        targets,
        intensity_range(image_layer),
    )


def no_layers_problem() -> str:
    return (
        "no prompt layers are selected: mark the objects on one or a few frames in a "
        "Points, Shapes or Labels layer and select it under 'prompt layers'"
    )


def make_plan(image_layer, prompt_layers, frame_range: tuple[int, int] | None = None) -> RunPlan:
    """Read the image and prompt layers into a :class:`RunPlan`, or raise PromptError.

    ``frame_range``: ``(first, last)`` frame numbers, inclusive, of the frames to
    label; by default all frames without prompts.
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
        first, last = (0, n - 1) if frame_range is None else frame_range
        first, last = max(int(first), 0), min(int(last), n - 1)
        where = (
            "every frame" if (first, last) == (0, n - 1) else f"every frame from {first} to {last}"
        )
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
