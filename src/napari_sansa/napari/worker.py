"""What runs in the session's worker thread: plain values in, plain values out.

The session reads settings and layers on the main thread into frozen values
(:class:`~napari_sansa.core.models.source.ModelSource`, :class:`RunSettings`,
:class:`~napari_sansa.napari.plan.RunPlan`); the generator :func:`run_frames` gets
the model from the session's model cache (loading it if needed), runs the core's
``segment_iter`` and yields one :class:`FrameResult` per finished frame. It never
touches a layer or a Qt object; the session writes each result on the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.models.cache import ModelCache  # the widget keeps one model
from napari_sansa.core.models.source import ModelSource
from napari_sansa.core.options import SegmentOptions
from napari_sansa.napari.imageset import SetPlan
from napari_sansa.napari.plan import RunPlan

__all__ = ["FrameResult", "ModelCache", "RunOutcome", "RunSettings", "run_frames"]

CUSTOM = "custom files"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """A run from the viewer: the core's :class:`~napari_sansa.SegmentOptions`
    (``segment``; its ``instances`` give objects per frame, napari/objects_output.py) and
    what only the viewer has. ``probabilities``: probability layers too.
    ``sequential_axis``: sequential mode on a stack with several frame axes: the name of
    the axis it runs along (as the image's axis labels or the widget call it, e.g. "z";
    None: the last frame axis), separately for each index of the other frame axes, never
    across them. ``tracks``: a :class:`~napari_sansa.napari.tracks_output.TrackSettings`
    (or True for its defaults): link the objects into tracks when the run ends (tracks
    imply objects: without ``instances``, the default ObjectOptions). Made by
    :meth:`make` from keywords of both."""

    segment: SegmentOptions = field(default_factory=SegmentOptions)
    probabilities: bool = False
    sequential_axis: str | None = None
    tracks: object = None  # a TrackSettings, or None

    def __post_init__(self):
        if not isinstance(self.segment, SegmentOptions):
            raise InvalidInputError(
                f"segment must be a SegmentOptions, got {type(self.segment).__name__}"
            )
        along = self.sequential_axis
        if along is not None and not isinstance(along, str):
            raise OptionError(
                "sequential_axis", along, "the name of a frame axis, e.g. 'z' (or None: the last)"
            )
        object.__setattr__(self, "probabilities", bool(self.probabilities))
        if self.tracks is None or self.tracks is False:
            object.__setattr__(self, "tracks", None)
            return
        from napari_sansa.core.objects import ObjectOptions
        from napari_sansa.napari.tracks_output import TrackSettings

        tracks = TrackSettings() if self.tracks is True else self.tracks
        if not isinstance(tracks, TrackSettings):
            raise OptionError("tracks", self.tracks, "a TrackSettings, True or None")
        object.__setattr__(self, "tracks", tracks)
        if self.segment.instances is None:  # tracks link objects
            object.__setattr__(self, "segment", replace(self.segment, instances=ObjectOptions()))

    @classmethod
    def make(cls, segment=None, **keywords) -> RunSettings:
        """``segment`` (a SegmentOptions, or None) with ``keywords``: this value's own
        fields and the SegmentOptions' (``RunSettings.make(mode="sequential")``)."""
        own = {f.name for f in fields(cls)} - {"segment"}
        mine = {k: keywords.pop(k) for k in list(keywords) if k in own}
        return cls(SegmentOptions.make(segment, **keywords), **mine)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One finished frame: its class map, scores and (optionally) probability maps."""

    frame: int
    labels: np.ndarray
    scores: dict
    is_reference: bool
    probabilities: dict | None = None
    part: int = 0  # which image of the set (SetPlan.parts)
    objects: tuple | None = None  # (object ids, ObjectTable) with the run's instances


@dataclass(frozen=True)
class RunOutcome:
    """What a run ended with; ``error`` holds a user error's message (shown as it is)."""

    done: int
    error: str | None = None
    details: str | None = None  # the full text behind ``error`` (shown on demand)


def worker_factory(owner):
    """``owner``'s ``create_worker`` (napari's, which the widget gives from
    :mod:`._qt.workers`); a clear error for a session made without one."""
    if owner.create_worker is None:
        raise RuntimeError(
            f"{type(owner).__name__} was made without create_worker: pass "
            "create_worker=napari_sansa.napari._qt.workers.create_worker to start runs"
        )
    return owner.create_worker


def start_worker(owner, worker, on_yielded, **more):
    """Connect a napari worker to ``owner``'s slots (``on_yielded`` for each step, and
    ``owner._on_returned``, ``_on_errored``, ``_on_finished``; ``more``: other signals,
    e.g. ``aborted=``), keep it as ``owner.worker``, say it runs, start it."""
    worker.yielded.connect(on_yielded)
    worker.returned.connect(owner._on_returned)
    worker.errored.connect(owner._on_errored)
    for signal, slot in more.items():
        getattr(worker, signal).connect(slot)
    worker.finished.connect(owner._on_finished)
    owner.worker = worker
    owner.running.emit(True)
    worker.start()
    return worker


def reference_labels(pred, masks: dict[int, np.ndarray], dtype) -> np.ndarray:
    """A reference frame's class map: SANSA's decoding for clicks, boxes and scribbles,
    the person's own masks as they are (painted last, so they win where they overlap)."""
    out = np.where(np.isin(pred.labels, list(masks)), 0, pred.labels).astype(dtype)
    for c, mask in sorted(masks.items()):
        out[mask] = c
    return out


@contextlib.contextmanager
def leave_a_core_for_napari(threads: int | None = None):
    """Run the widget's work under the thread policy (:mod:`napari_sansa.core.threads`)
    with one core left to napari's event loop (at least one for the run).

    With as many torch (OpenMP) threads as cores, napari's event loop takes a core
    from one of them now and then and every parallel step waits for it: on a
    2-core machine a warm run took 45 s in the worker instead of 9 s inline, and
    5 s with one core left free (benchmarks/bench_gui_stall.py). ``threads``: the
    advanced setting (None: automatic). The settings are the worker thread's and
    are put back afterwards.
    """
    from napari_sansa.core.threads import thread_policy

    with thread_policy(threads, reserve=1):
        yield


def run_frames(
    plan: RunPlan | SetPlan,
    model_settings: ModelSource,
    settings: RunSettings,
    cache: ModelCache,
    cancel: threading.Event | None = None,
    names=None,
) -> Iterator[FrameResult]:
    """Generator for the worker: the decoded references, then each target frame.

    Stopping the iteration (the worker's ``quit``) stops the computation between
    frames; ``cancel`` (set by the session's Stop, from the main thread) also ends it
    before the next frame is handed over, also in the middle of a batch. A user error
    (bad weights, unusable prompts, not enough memory) or a
    RuntimeError (torch's) ends the run with a :class:`RunOutcome` carrying the
    message (an option worded by ``names``, the widget's names of its controls: see
    :func:`~napari_sansa.napari.messages.gui_message`); anything else reaches the
    worker's ``errored`` signal.
    """
    done = 0
    try:
        with leave_a_core_for_napari(getattr(model_settings, "threads", None)):
            for result in _results(plan, model_settings, settings, cache, cancel):
                if cancel is not None and cancel.is_set():
                    break
                yield result
                done += 1
    except (ValueError, OSError, MemoryError) as exc:
        # user errors and memory: the core's messages say what to change, in GUI terms
        from napari_sansa.napari.messages import gui_message

        return RunOutcome(done, *gui_message(exc, model_settings, names))
    except RuntimeError as exc:
        # torch reports many failures as RuntimeError, which superqt's worker would take
        # for its own deletion and only warn about: report it here, with the traceback
        logger.exception("SANSA run failed")
        return RunOutcome(done, f"SANSA failed: {type(exc).__name__}: {exc}")
    return RunOutcome(done)


class SetFrames(Sequence):
    """The targets of an image set, read lazily (one image per item), each scaled to
    [0, 1] by its own image's rule when the images are not all scaled alike."""

    def __init__(self, plan: SetPlan, items, scale: bool):
        self.plan, self.items, self.scale = plan, tuple(items), scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("SetFrames does not slice; iterate over it or index one frame")
        part, frame = self.items[i]
        return self.read(part, frame)

    def read(self, part: int, frame: int):
        from napari_sansa.core.images import to_float_rgb

        p = self.plan.parts[part]
        image = p.stack[frame]
        return to_float_rgb(image, p.intensity_range, p.stack.name) if self.scale else image


def _results(plan, model_settings, settings: RunSettings, cache: ModelCache, cancel=None):
    import napari_sansa as ns
    from napari_sansa.napari.objects_output import frame_objects

    plan = plan if isinstance(plan, SetPlan) else SetPlan((plan,))
    dtype = plan.labels_dtype
    shared, intensity = plan.shared_intensity_range()
    if len(plan.parts) == 1:  # one stack: the core reads and scales its frames itself
        part = plan.parts[0]
        targets = part.stack.select(part.targets)
    else:
        targets = SetFrames(plan, plan.targets, scale=not shared)
    reader = SetFrames(plan, (), scale=not shared)
    model = cache.get(model_settings)
    references = plan.references
    refs = [ns.Reference(reader.read(i, r.frame), r.prompts) for i, r in references]
    masks = [r.masks() for _, r in references]
    options = replace(settings.segment, intensity_range=intensity)
    objects = options.instances
    groups = _sequential_groups(plan, settings)
    if groups is None:  # cancel: Stop reaches the core, also in the middle of a batch
        results = model.segment_iter(refs, targets, options, cancel=cancel, include_references=True)
    else:
        results = _grouped(model, refs, plan, groups, options, cancel)
    for pred in results:
        if pred.is_reference:
            own = masks[pred.index]
            part, ref = references[pred.index]
            labels = reference_labels(pred, own, dtype)
            yield FrameResult(
                ref.frame,
                labels,
                {c: (1.0 if c in own else float(s)) for c, s in pred.scores.items()},
                True,
                _probabilities(pred, own) if settings.probabilities else None,
                part,
                objects=frame_objects(pred, labels, own, objects),
            )
        else:
            part, frame = pred.target if hasattr(pred, "target") else plan.targets[pred.index]
            yield FrameResult(
                frame,
                pred.labels.astype(dtype, copy=False),
                {c: float(s) for c, s in pred.scores.items()},
                False,
                _probabilities(pred, {}) if settings.probabilities else None,
                part,
                objects=frame_objects(pred, pred.labels, {}, objects),
            )


def _sequential_groups(plan, settings: RunSettings):
    """Sequential runs on a stack with several frame axes: the targets in groups, each
    along the chosen axis within one index of the others (None: one run, as given)."""
    from napari_sansa.core.sequences import sequential_groups

    if settings.segment.mode != "sequential" or len(plan.parts) != 1:
        return None
    part = plan.parts[0]
    g = part.geometry
    if len(g.frame_axes) < 2:
        return None
    names = {g.axis_name(k): k for k in g.frame_axes}
    name = settings.sequential_axis
    if name is not None and name not in names:
        raise OptionError(
            "sequential_axis",
            name,
            f"one of the frame axes {', '.join(map(repr, names))}",
        )
    along = g.frame_axes[-1] if name is None else names[name]
    return sequential_groups(g.frame_sizes, g.frame_axes.index(along), part.targets)


class _Grouped:
    """A prediction of a grouped run, with the (part, frame) it is for."""

    def __init__(self, pred, target):
        self._pred, self.target = pred, target

    def __getattr__(self, name):
        return getattr(self._pred, name)


def _grouped(model, refs, plan, groups, options, cancel):
    """The references (prepared once), then each group's frames in order."""
    part = plan.parts[0]
    memory = model.prepare_references(refs, options)
    first = True
    for frames in groups:
        run = model.segment_iter(
            memory, part.stack.select(frames), options, cancel=cancel, include_references=first
        )
        for pred in run:
            yield pred if pred.is_reference else _Grouped(pred, (0, frames[pred.index]))
        first = False


def _probabilities(pred, masks) -> dict[int, np.ndarray]:
    probs = {c: p.astype(np.float32, copy=False) for c, p in pred.probabilities.items()}
    for c, mask in masks.items():
        probs[c] = mask.astype(np.float32)
    return probs
