"""What a run gives back: per-image predictions, and references decoded into memory."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch.nn.functional as F

from napari_sansa.core.cache import tensor_digest
from napari_sansa.core.engine import MemoryEntry
from napari_sansa.core.fusion import check_threshold, fuse_labels, sigmoid

__all__ = ["ClassGroup", "Prediction", "Predictions", "ReferenceMemory", "make_prediction"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """The result for one image.

    ``logits[c]`` and ``probabilities[c]`` are ``(H, W)`` float32 maps of class ``c`` at
    the image's own size; ``labels`` is the fused ``(H, W)`` class map (0 =
    background); ``scores[c]`` is SAM2's predicted IoU for the kept mask of class
    ``c`` (1.0 for a reference given as a mask), a confidence in [0, 1].
    ``objects`` is the ``(H, W)`` map of object ids (0 = background) that
    :func:`napari_sansa.split_objects` makes of ``labels`` (with ``object_options``,
    default ones when None) and ``object_table`` measures them, one row per object.
    """

    index: int
    logits: dict
    scores: dict
    threshold: float = 0.5
    is_reference: bool = False
    object_options: object = None  # napari_sansa.ObjectOptions (None: the defaults)

    @cached_property
    def probabilities(self) -> dict[int, np.ndarray]:
        return {c: sigmoid(v) for c, v in self.logits.items()}

    @cached_property
    def labels(self) -> np.ndarray:
        return fuse_labels(self.probabilities, self.threshold)

    def fused(self, logits: dict) -> np.ndarray:
        """The class map of ``logits`` (a part of this prediction's, e.g. one block of a
        tiled one) with this prediction's threshold."""
        return fuse_labels({c: sigmoid(v) for c, v in logits.items()}, self.threshold)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(self.logits))

    @property
    def shape(self) -> tuple[int, int]:
        return getattr(self.logits, "shape", None) or next(iter(self.logits.values())).shape

    @cached_property
    def objects(self) -> np.ndarray:
        from napari_sansa.core.objects import objects_of

        return objects_of(self)

    @cached_property
    def object_table(self):
        from napari_sansa.core.objects import object_table

        return object_table(self.objects, self.labels, self.probabilities)

    def with_threshold(self, threshold: float) -> Prediction:
        """The same prediction fused at another threshold (nothing is recomputed: the
        logits, scores and, once computed, the probabilities are shared)."""
        new = Prediction(
            self.index,
            self.logits,
            self.scores,
            check_threshold(threshold),
            self.is_reference,
            self.object_options,
        )
        if "probabilities" in self.__dict__:
            new.__dict__["probabilities"] = self.__dict__["probabilities"]
        return new

    def __repr__(self) -> str:
        kind = "reference" if self.is_reference else "target"
        scores = ", ".join(f"{c}: {s:.3f}" for c, s in sorted(self.scores.items()))
        return f"Prediction({kind} {self.index}, shape={self.shape}, scores={{{scores}}})"


class Predictions(list):
    """A list of target :class:`Prediction` s; ``.references`` holds what was decoded
    from each reference's prompts."""

    def __init__(self, items=(), references=()):
        super().__init__(items)
        self.references: list[Prediction] = list(references)


@dataclass
class ClassGroup:
    """Classes with the same number of references, processed together as a batch."""

    classes: list[int]
    k: int
    entries: dict[int, MemoryEntry] = field(default_factory=dict)
    digests: list[str] | None = None  # per class: what a target's decoding depends on
    # per class, the reference index of each of its k episode frames
    references: list[tuple[int, ...]] = field(default_factory=list)
    # the episode frames a target (index k) attends to: (as memories, by object pointer)
    reach: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def references_reaching(self, how: str) -> dict[int, tuple[int, ...]]:
        """Per class, the references whose frames a target sees ``how``: "memory"
        (memory attention on their features, and their pointers), "pointer" (only
        their object pointers) or "none"."""
        memory, pointers = (set(x) for x in self.reach)
        frames = {
            "memory": memory,
            "pointer": pointers - memory,
            "none": set(range(self.k)) - memory - pointers,
        }[how]
        return {
            c: tuple(refs[e] for e in sorted(frames))
            for c, refs in zip(self.classes, self.references, strict=True)
        }

    def class_digests(self) -> list[str]:
        """Per class, a hash of its reference memory (all ``k`` entries): two runs whose
        class has the same digest decode every target identically."""
        if self.digests is None:
            parts = [[f"k={self.k}"] for _ in self.classes]
            for idx in range(self.k):
                e = self.entries[idx]
                feats, pos, ptr = (x.detach().cpu() for x in (e.features, e.pos, e.obj_ptr))
                for j, part in enumerate(parts):
                    part += [tensor_digest(feats[j]), tensor_digest(pos[j]), tensor_digest(ptr[j])]
            self.digests = ["/".join(part) for part in parts]
        return self.digests


class ReferenceMemory:
    """References decoded into per-class memory: prepare once, segment many times.

    Made by :meth:`SansaModel.prepare_references`; pass it to ``segment`` or
    ``segment_iter`` in place of the references, in this process or another one
    (it pickles, with its tensors moved to the CPU), e.g. to share it across the
    workers of a cluster. ``decoded`` holds what was decoded from each reference.
    """

    def __init__(self, groups, decoded, *, identity, input_size, intensity_range, n_references):
        self.groups = groups
        self.decoded = decoded
        self.identity = identity
        self.input_size = input_size
        self.intensity_range = intensity_range
        self.n_references = n_references

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(c for g in self.groups for c in g.classes))

    @property
    def pointer_only(self) -> dict[int, tuple[int, ...]]:
        """Per class with more than 7 references, the references (indices into the list
        given) that reach a target only through their object pointers.

        SAM2's memory bank holds 7 frames: the authors' rule keeps a class's first
        reference and its last six, so with ``k > 7`` references of a class, its
        references ``1 .. k-7`` (counted among that class's references) condition the
        targets only by their object pointers, not by memory attention on their
        features. Classes without such references are left out.
        """
        return self._reaching("pointer")

    @property
    def unused(self) -> dict[int, tuple[int, ...]]:
        """Per class with more than 16 references, those that reach a target neither
        by memory nor by object pointer (SAM2 uses at most 16 pointers)."""
        return self._reaching("none")

    def _reaching(self, how: str) -> dict[int, tuple[int, ...]]:
        out = {}
        for g in self.groups:
            out.update({c: r for c, r in g.references_reaching(how).items() if r})
        return dict(sorted(out.items()))

    def to(self, device) -> ReferenceMemory:
        moved = []
        for g in self.groups:
            entries = {
                i: MemoryEntry(e.features.to(device), e.pos.to(device), e.obj_ptr.to(device))
                for i, e in g.entries.items()
            }
            moved.append(replace(g, classes=list(g.classes), entries=entries))
        return ReferenceMemory(
            moved,
            self.decoded,
            identity=self.identity,
            input_size=self.input_size,
            intensity_range=self.intensity_range,
            n_references=self.n_references,
        )

    def __getstate__(self):
        state = self.to("cpu").__dict__.copy()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"ReferenceMemory({self.n_references} references, classes={list(self.classes)}, "
            f"input_size={self.input_size})"
        )


def make_prediction(index, hw, low, scores, classes, threshold, is_reference=False) -> Prediction:
    """``low``: ``[C, S/4, S/4]`` logits of ``classes`` -> a Prediction at the image's own
    size ``hw``."""
    up = F.interpolate(low[None].float(), size=hw, mode="bilinear", align_corners=False)[0]
    up = up.cpu().numpy()
    scores = scores.float().cpu().numpy()
    return Prediction(
        index,
        {c: up[j] for j, c in enumerate(classes)},
        {c: float(scores[j]) for j, c in enumerate(classes)},
        threshold,
        is_reference,
    )
