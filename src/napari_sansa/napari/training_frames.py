"""The frames to fine-tune on, read from a Labels layer of annotations (main thread, no Qt).

:func:`collect_training_frames` reads the annotated frames of an image (by default those
of its "[sansa references]" layer: the frames painted there and the output frames a person
corrected and took as references) into frozen ``(image, labels)`` pairs; its messages name
the stack's own frame numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sansa.napari.geometry import (
    META_KEY,
    PromptError,
    image_data,
    image_geometry,
    labels_array,
)
from napari_sansa.napari.messages import frames_text
from napari_sansa.napari.outputs import references_name
from napari_sansa.napari.plan import NO_IMAGE, intensity_range

__all__ = [
    "TrainingData",
    "annotated_frames",
    "collect_training_frames",
    "default_layer",
    "frames_text",
    "is_annotation_layer",
    "parse_frames",
]


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The annotated frames of one image, read on the main thread."""

    image: str
    layer: str
    frames: tuple[int, ...]
    pairs: tuple[tuple[np.ndarray, np.ndarray], ...]
    intensity_range: tuple[float, float] | None

    def fraction(self, k: int) -> float:
        """``finetune_iter``'s ``validation`` for ``k`` held-out frames."""
        n = len(self.frames)
        return min(max(int(k), 0), n - 1) / n if n else 0.0


def parse_frames(text: str, n_frames: int) -> tuple[int, ...] | None:
    """``"0, 3, 5-7"`` -> (0, 3, 5, 6, 7); empty -> None (all annotated frames)."""
    text = (text or "").strip()
    if not text:
        return None
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise PromptError(
                f"frames: {part!r} is not a frame number or a range like 3-7; write e.g. "
                "'0, 3, 5-7', or leave it empty for every annotated frame"
            ) from None
        if not (0 <= a <= b < n_frames):
            raise PromptError(f"frames: {part!r} is outside the image's frames 0..{n_frames - 1}")
        out.extend(range(a, b + 1))
    return tuple(sorted(set(out)))


def annotated_frames(labels_layer, geometry) -> list[int]:
    """Frames of ``labels_layer`` that hold any nonzero pixel."""
    data = labels_array(labels_layer)  # a multiscale layer: its full resolution
    return [f for f in range(geometry.n_frames) if np.any(np.asarray(data[geometry.index(f)]))]


def default_layer(viewer, image):
    """The image's "[sansa references]" Labels layer, if there is one that fits it."""
    from napari.layers import Labels

    name = references_name(image.name)
    try:
        shape = image_geometry(image).shape
    except PromptError:  # axes the person has still to choose: the run says what to do
        return None
    for layer in viewer.layers:
        if layer.name == name and isinstance(layer, Labels) and layer.data.shape == shape:
            return layer
    return None


def collect_training_frames(image, labels_layer, frames=None) -> TrainingData:
    """The annotated frames of ``image`` in ``labels_layer`` as ``(image, labels)`` pairs.

    ``frames``: frame numbers to train on (default: every frame with an annotation).
    Raises PromptError, naming the frames, when they cannot make training episodes."""
    if image is None:
        raise PromptError(NO_IMAGE)
    geometry = image_geometry(image)
    if labels_layer is None:
        raise PromptError(
            f"there are no annotations to train on: paint whole frames of '{image.name}' in "
            f"'{references_name(image.name)}' (or correct output frames and take them as "
            "references), then choose that layer under 'annotations'"
        )
    if tuple(labels_layer.data.shape) != geometry.shape:
        raise PromptError(
            f"'{labels_layer.name}' has shape {tuple(labels_layer.data.shape)}, the image "
            f"'{image.name}' {geometry.shape}: choose a Labels layer painted on this image"
        )
    painted = annotated_frames(labels_layer, geometry)
    if frames is None:
        chosen = painted
    else:
        empty = [f for f in frames if f not in painted]
        if empty:
            raise PromptError(
                f"{frames_text(empty)} of '{labels_layer.name}' hold no annotation: paint "
                "them or leave them out of 'frames'"
            )
        chosen = list(frames)
    if len(chosen) < 2:
        have = f"only {frames_text(chosen)}" if chosen else "no frame"
        raise PromptError(
            f"fine-tuning needs at least two annotated frames; '{labels_layer.name}' has {have}: "
            "annotate (or correct and take as references) another frame completely"
        )
    pairs, where = [], {}
    for f in chosen:
        index = geometry.index(f)
        labels = np.array(labels_array(labels_layer)[index])
        if (labels != 0).all() and len(np.unique(labels)) == 1:
            raise PromptError(
                f"frame {f} of '{labels_layer.name}' is one class everywhere: there is no "
                "background to learn from; leave some pixels 0 or drop the frame"
            )
        for c in np.unique(labels):
            if c:
                where.setdefault(int(c), []).append(f)
        pairs.append((np.asarray(image_data(image)[index]), labels))
    for c, fs in sorted(where.items()):
        if len(fs) < 2:
            raise PromptError(
                f"class {c} is annotated only in frame {fs[0]}: fine-tuning pairs two frames of "
                f"each class; annotate it in another frame too, or erase it from frame {fs[0]}"
            )
    return TrainingData(
        image.name, labels_layer.name, tuple(chosen), tuple(pairs), intensity_range(image)
    )


def is_annotation_layer(layer, geometry) -> bool:
    """A Labels layer on the image's frames that napari-sansa did not write itself."""
    from napari.layers import Labels

    role = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return (
        isinstance(layer, Labels)
        and tuple(layer.data.shape) == geometry.shape
        and role not in ("output", "objects")
    )
