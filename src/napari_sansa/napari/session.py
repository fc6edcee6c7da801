"""The napari side of SANSA without Qt widgets: run, correct, save.

A :class:`SansaSession` belongs to one viewer (a ``napari.Viewer`` or a plain
``ViewerModel``). It reads the layers into a frozen :class:`~.plan.RunPlan`, starts
the worker (through the ``create_worker`` it is given: napari's, from :mod:`._qt.workers`,
when the widget makes it; the one place the worker gets its model is
:attr:`SansaSession.models`), writes each yielded frame into the output layer on
the main thread, keeps what it wrote (:mod:`.edits`) so that a run never replaces
a frame the person edited since, turns corrected frames into references and saves.
It tells what happens through its signals (``status``, ``frame_written``,
``running``) and napari notifications; the dock widget only lays out and wires
controls to it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from napari_sansa.napari import edits
from napari_sansa.napari.corrections import Corrections
from napari_sansa.napari.geometry import PromptError, image_geometry, labels_array
from napari_sansa.napari.imageset import make_set_plan
from napari_sansa.napari.messages import frames_text, option_name
from napari_sansa.napari.objects_output import ObjectsOutput, split_frame
from napari_sansa.napari.outputs import (
    find_output,
    prepare_output,
    prepare_probabilities,
)
from napari_sansa.napari.plan import NO_IMAGE, memory_note
from napari_sansa.napari.preview import FramePreviews
from napari_sansa.napari.track_session import TrackCorrections
from napari_sansa.napari.worker import (
    FrameResult,
    ModelCache,
    RunOutcome,
    RunSettings,
    run_frames,
    start_worker,
    worker_factory,
)
from napari_sansa.napari.writer import prefer_labels_tiff_writer

__all__ = ["EDITED_ACTION", "NO_IMAGE", "FrameReport", "SansaSession"]

#: the name of the action that takes the edited frames as references (a button in the widget)
EDITED_ACTION = "Use edited"
#: what Run says while a run is going
ALREADY_RUNNING = "SANSA is already running: wait for it, or press Stop"

#: said when every prompt is class 255 (a black-and-white mask opened as labels)
MASK_255 = (
    "the prompts are class 255 (a 0/255 mask, as black-and-white images are saved): the "
    "output labels are class 255 too; paint with class 1 (or convert the mask) for class 1"
)

_SHOW = {"info": show_info, "warning": show_warning, "error": show_error}


@dataclass(frozen=True)
class FrameReport:
    """One frame a run finished: ``kind`` is 'reference', 'predicted' or 'kept' (an
    edited frame the run left as it was)."""

    frame: int
    scores: dict
    kind: str
    label: str
    part: int = 0  # which image of the set
    image: str = ""  # that image's name

    @property
    def key(self):
        """The frame number in a one-image run, (part, frame) in an image set."""
        return (self.part, self.frame) if self.image_set else self.frame

    image_set: bool = False
    counts: dict | None = None  # objects per class, with the run's instances


class SansaSession(TrackCorrections, Corrections):
    """Runs, corrections and saving for one viewer."""

    status = Signal(str)  # every message shown to the person
    frame_written = Signal(object)  # a FrameReport, for each frame a run finished
    running = Signal(bool)  # a run started (True) or ended (False)

    def __init__(self, viewer, models: ModelCache | None = None, create_worker=None):
        self.viewer = viewer
        #: how a run's thread is made (napari's ``create_worker``: :mod:`._qt.workers`);
        #: a session without it does everything but start runs
        self.create_worker = create_worker
        #: how errors about run options call them (the widget gives its controls' labels)
        self.names = option_name
        #: where the worker gets its model: one cache, loaded in the worker, kept between runs
        self.models = ModelCache() if models is None else models
        self.worker = None
        self.plan = None  # the SetPlan of the current (or last) run
        self.images: tuple = ()  # its image layers, one per plan part
        self.outputs: dict[int, object] = {}  # part -> output layer, made at its first frame
        self.objects = None  # ObjectsOutput of the current (or last) run with objects
        self.done = 0
        self.kept: tuple[int, ...] = ()  # edited frames the current (or last) run left alone
        self.message = ""
        self.details = ""  # the full text of the last failure (the widget shows it on demand)
        self.alive = True
        self._probability_layers: dict[int, dict] = {}  # part -> class -> layer
        self._probabilities = False
        self._cancel = threading.Event()
        self._stopped = False
        self._failed: str | None = None
        prefer_labels_tiff_writer()
        #: the annotation loop on the shown frame: previews, prepared frames, click fixes
        self.previews = FramePreviews(self)

    # -- messages -----------------------------------------------------------------------
    def notify(self, message: str, severity: str = "info", *, popup: bool = True) -> None:
        """Show ``message`` in the status (the ``status`` signal) and, with ``popup``, as a
        napari notification of ``severity`` ('info', 'warning', 'error')."""
        self.message = message
        if self.alive:
            self.status.emit(message)
        if popup:
            _SHOW[severity](message)

    def fail(self, message: str) -> None:
        self.notify(message, "error")

    # -- layers -------------------------------------------------------------------------
    def output_layer(self, image):
        """The output Labels layer of ``image``, if there is one that fits it."""
        return None if image is None else find_output(self.viewer, image)

    def edited_frames(self, image) -> list[int]:
        """Frames of ``image``'s output that were changed by hand since SANSA wrote them."""
        output = self.output_layer(image)
        if output is None:
            return []
        return edits.edited_frames(output, image_geometry(image))

    # -- running ------------------------------------------------------------------------
    @property
    def output(self):
        """The output layer of the run's first image (None before its first frame)."""
        return self.outputs.get(0)

    def run(
        self,
        image,
        prompt_layers,
        model_settings,
        settings: RunSettings | None = None,
        frame_range=None,
        as_channels: bool = False,
    ):
        """Label the frames of ``image`` (a layer, or a list of image layers: an image
        set) without prompts; returns the started worker, or None when the inputs
        cannot be used (the reason is shown). Output layers are made when their image's
        first frame is done: a run that fails before leaves no layer behind.
        ``frame_range``: the frames to label, ``{axis: (first, last)}`` per frame axis
        or a flat ``(first, last)`` (see :func:`~.plan.frames_in_range`).
        ``as_channels``: the listed layers are the channels of one image (see
        :func:`~.imageset.make_set_plan`)."""
        if self.busy():
            self.notify(ALREADY_RUNNING)
            return self.worker
        settings = RunSettings() if settings is None else settings
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        layers = [layer for layer in prompt_layers if layer in self.viewer.layers]
        try:
            plan = make_set_plan(images, layers, frame_range, as_channels)
            problem = self._check_tracks(images, settings)
        except PromptError as exc:
            problem = str(exc)
        if problem:
            self.fail(problem)
            return None
        create_worker = worker_factory(self)
        self.images = tuple(images[: len(plan.parts)])
        self.outputs, self._probability_layers = {}, {}
        self._probabilities = settings.probabilities
        self.plan = plan
        opts = settings.segment.instances
        self.objects = None if opts is None else ObjectsOutput(self.viewer, opts, self.images)
        self._track_settings = settings.tracks
        self._track_source = (plan, model_settings, settings.segment)
        self._runs_without_tracks(settings)
        self.done, self.kept, self._stopped, self._failed = 0, (), False, None
        self.details = ""
        self._cancel = threading.Event()
        cached = self.models.has(model_settings)
        loading = "" if cached else f"loading {model_settings.describe()}, "
        refs, targets = len(plan.references), len(plan.targets)
        what = "frame(s)" if len(images) == 1 else f"image(s) of {len(images)}"
        self.notify(f"{loading}{refs} reference {what}, {targets} to label", popup=False)
        note = memory_note(plan.parts[0]) if len(plan.parts) == 1 else None
        if note is not None:
            show_warning(note)
        if plan.classes == (255,):
            show_info(MASK_255)
        desc = images[0].name if len(images) == 1 else f"{len(images)} images"
        worker = create_worker(
            run_frames,
            plan,
            model_settings,
            settings,
            self.models,
            self._cancel,
            self.names,
            _progress={"total": plan.total, "desc": f"SANSA: {desc}"},
            _start_thread=False,
        )
        return start_worker(self, worker, self._on_yielded, aborted=self._on_aborted)

    def _output_for(self, part: int):
        """The output layer of the set's ``part``, made now if needed (the active layer
        stays active); None when the image or its output was removed."""
        if part in self.outputs:
            layer = self.outputs[part]
            return layer if layer in self.viewer.layers else None
        image = self.images[part]
        if image not in self.viewer.layers:
            return None
        selection = self.viewer.layers.selection
        active, selected = selection.active, set(selection)
        self.outputs[part] = prepare_output(self.viewer, image, self.plan, part)
        if self._probabilities:
            self._probability_layers[part] = prepare_probabilities(
                self.viewer, image, self.plan, part
            )
        if selection.active is not active:  # Run never takes the layer being worked on
            selection.clear()
            selection.update(layer for layer in selected if layer in self.viewer.layers)
            selection.active = active
        return self.outputs[part]

    def busy(self) -> bool:
        """Whether a run is going (a question only: the caller says so where needed)."""
        return self.worker is not None

    def stop(self) -> None:
        """Stop the run: nothing more is written into the layers from now on."""
        if self.worker is None or self._stopped:
            return
        self._stopped = True
        self._cancel.set()
        self.worker.quit()
        self.notify("stopping...", popup=False)

    @property
    def stopping(self) -> bool:
        """Stop was pressed (the worker may still be finishing its current step)."""
        return self._stopped

    def close(self, *_) -> None:
        """The widget went away: stop the run and emit nothing more."""
        self.alive = False
        if self.worker is not None:
            self._cancel.set()
            self.worker.quit()

    # -- worker signals (main thread) ---------------------------------------------------
    def _on_yielded(self, result: FrameResult) -> None:
        if not self.alive or self.plan is None or self._stopped:
            return  # Stop acknowledged: frames still on their way are dropped
        part = result.part
        output = self._output_for(part)
        if output is None:
            image = self.images[part]
            gone = (
                f"the output layer '{self.outputs[part].name}'"
                if part in self.outputs
                else f"the image '{image.name}'"
            )
            show_warning(f"{gone} was removed: the run stops")
            self.stop()
            return
        geometry = self.plan.parts[part].geometry
        index = geometry.index(result.frame)
        if edits.is_edited(output, geometry, result.frame):
            kind = "kept"
            self.kept = (*self.kept, result.frame)
        else:
            kind = "reference" if result.is_reference else "predicted"
            labels_array(output)[index] = result.labels  # a multiscale one's levels follow
            edits.record(output, result.frame, result.labels)
            output.refresh()
        probability_layers = self._probability_layers.get(part, {})
        for c, p in (result.probabilities or {}).items():
            layer = probability_layers.get(c)
            if layer is not None and layer in self.viewer.layers:
                layer.data[index] = p
                layer.refresh()
        counts = None
        if self.objects is not None:  # the objects of what the layer now holds
            pair = result.objects if kind != "kept" else split_frame(
                np.asarray(labels_array(output)[index]), self.objects.options)  # fmt: skip
            counts = self.objects.write(part, result.frame, pair)
        self.done += 1
        several = len(self.plan.parts) > 1
        name = self.images[part].name
        label = geometry.describe(result.frame)
        report = FrameReport(
            result.frame,
            result.scores,
            kind,
            f"{name}, {label}" if several and geometry.leading else (name if several else label),
            part,
            name,
            several,
            counts=counts,
        )
        self.frame_written.emit(report)
        self.notify(f"{self.done} / {self.plan.total} frames done", popup=False)

    def _on_returned(self, outcome: RunOutcome) -> None:
        if outcome is not None and outcome.error:
            self._failed = outcome.error
            self.details = outcome.details or outcome.error
            show_error(outcome.error)

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker already shows the exception (with its traceback) as a notification
        self._failed = f"{type(exc).__name__}: {exc}"

    def _on_aborted(self) -> None:
        self._stopped = True

    def _on_finished(self) -> None:
        self.worker = None
        if not self.alive:
            return
        if getattr(self, "objects", None) is not None:
            # ids in frame order, as a re-run gives them; 3D objects of a z-stack
            self.objects.finish(self.outputs, self._probability_layers)
        untracked = self._track_settings is not None and (self._failed or self._stopped)
        if untracked:
            self._track_settings = None  # no tracks of a part of the frames
        if self._start_linking():
            return  # running until the tracks are made (track_session.py)
        self.running.emit(False)
        total = self.plan.total if self.plan is not None else 0
        if self._failed:
            self.notify(self._failed, popup=False)
            return
        if self._stopped:
            message = f"stopped: {self.done} of {total} frames done"
            message += "; no tracks (link a whole run)" if untracked else ""
        else:
            message = f"done: {self.done} frames{self.track_note}"
        if not self.kept:
            self.notify(message, popup=False)
            return
        self.notify(
            f"{message}; kept {frames_text(self.kept)} as you edited by hand (not "
            f"overwritten). '{EDITED_ACTION}' makes your edits references for the next run",
            "warning",
        )
