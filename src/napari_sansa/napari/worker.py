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
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.models.cache import ModelCache  # the widget keeps one model
from napari_sansa.core.models.source import ModelSource
from napari_sansa.napari.plan import RunPlan

__all__ = ["FrameResult", "ModelCache", "RunOutcome", "RunSettings", "run_frames"]

CUSTOM = "custom files"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    mode: str = "independent"
    input_size: int | None = 640
    threshold: float = 0.5
    probabilities: bool = False
    batch_size: int | None = None  # None: the core's automatic batch
    tile_size: int | None = None  # tiles of this many pixels (None: off); halo None: 1/8
    halo: int | None = None
    instances: object = None  # an ObjectOptions: objects per frame (napari/objects_output.py)

    def __post_init__(self):
        from napari_sansa.napari.objects_output import check_run_settings

        check_run_settings(self)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One finished frame: its class map, scores and (optionally) probability maps."""

    frame: int
    labels: np.ndarray
    scores: dict
    is_reference: bool
    probabilities: dict | None = None
    objects: tuple | None = None  # (object ids, ObjectTable) with RunSettings.instances


@dataclass(frozen=True)
class RunOutcome:
    """What a run ended with; ``error`` holds a user error's message (shown as it is)."""

    done: int
    error: str | None = None


def reference_labels(pred, masks: dict[int, np.ndarray], dtype) -> np.ndarray:
    """A reference frame's class map: SANSA's decoding for clicks, boxes and scribbles,
    the person's own masks as they are (painted last, so they win where they overlap)."""
    out = np.where(np.isin(pred.labels, list(masks)), 0, pred.labels).astype(dtype)
    for c, mask in sorted(masks.items()):
        out[mask] = c
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def leave_a_core_for_napari():
    """Run torch's CPU work on one core fewer than the machine has (at least one).

    With as many torch (OpenMP) threads as cores, napari's event loop takes a core
    from one of them now and then and every parallel step waits for it: on a
    2-core machine a warm run took 45 s in the worker instead of 9 s inline, and
    5 s with one core left free (benchmarks/bench_gui_stall.py). The setting is
    the worker thread's and is put back afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, _cores() - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_frames(
    plan: RunPlan,
    model_settings: ModelSource,
    settings: RunSettings,
    cache: ModelCache,
    cancel: threading.Event | None = None,
) -> Iterator[FrameResult]:
    """Generator for the worker: the decoded references, then each target frame.

    Stopping the iteration (the worker's ``quit``) stops the computation between
    frames; ``cancel`` (set by the session's Stop, from the main thread) also ends it
    before the next frame is handed over, also in the middle of a batch. A user error
    (bad weights, unusable prompts, not enough memory) or a
    RuntimeError (torch's) ends the run with a :class:`RunOutcome` carrying the
    message; anything else reaches the worker's ``errored`` signal.
    """
    done = 0
    try:
        with leave_a_core_for_napari():
            for result in _results(plan, model_settings, settings, cache, cancel):
                if cancel is not None and cancel.is_set():
                    break
                yield result
                done += 1
    except (ValueError, OSError, MemoryError) as exc:
        # user errors and memory: the core's messages say what to change
        return RunOutcome(done, str(exc) or type(exc).__name__)
    except RuntimeError as exc:
        # torch reports many failures as RuntimeError, which superqt's worker would take
        # for its own deletion and only warn about: report it here, with the traceback
        logger.exception("SANSA run failed")
        return RunOutcome(done, f"SANSA failed: {type(exc).__name__}: {exc}")
    return RunOutcome(done)


def _results(plan: RunPlan, model_settings, settings: RunSettings, cache: ModelCache, cancel=None):
    import napari_sansa as ns
    from napari_sansa.napari.objects_output import frame_objects

    dtype = plan.labels_dtype
    model = cache.get(model_settings)
    refs = [ns.Reference(plan.stack[r.frame], r.prompts) for r in plan.references]
    masks = [r.masks() for r in plan.references]
    results = model.segment_iter(
        refs,
        plan.stack.select(plan.targets),
        mode=settings.mode,
        input_size=settings.input_size,
        threshold=settings.threshold,
        intensity_range=plan.intensity_range,
        batch_size=settings.batch_size,
        tile_size=settings.tile_size,
        halo=settings.halo,
        instances=settings.instances or False,
        include_references=True,
        cancel=cancel,
    )
    for pred in results:
        if pred.is_reference:
            own = masks[pred.index]
            labels = reference_labels(pred, own, dtype)
            yield FrameResult(
                plan.references[pred.index].frame,
                labels,
                {c: (1.0 if c in own else float(s)) for c, s in pred.scores.items()},
                True,
                _probabilities(pred, own) if settings.probabilities else None,
                objects=frame_objects(pred, labels, own, settings.instances),
            )
        else:
            yield FrameResult(
                plan.targets[pred.index],
                pred.labels.astype(dtype, copy=False),
                {c: float(s) for c, s in pred.scores.items()},
                False,
                _probabilities(pred, {}) if settings.probabilities else None,
                objects=frame_objects(pred, pred.labels, {}, settings.instances),
            )


def _probabilities(pred, masks) -> dict[int, np.ndarray]:
    probs = {c: p.astype(np.float32, copy=False) for c, p in pred.probabilities.items()}
    for c, mask in masks.items():
        probs[c] = mask.astype(np.float32)
    return probs
