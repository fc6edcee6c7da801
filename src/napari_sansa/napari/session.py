"""The napari side of SANSA without Qt widgets: run, correct, save.

A :class:`SansaSession` belongs to one viewer (a ``napari.Viewer`` or a plain
``ViewerModel``). It reads the layers into a frozen :class:`~.plan.RunPlan`, starts
the worker (napari's ``create_worker``; the one place the worker gets its model is
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
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from napari_sansa.core.fusion import label_dtype
from napari_sansa.napari import edits
from napari_sansa.napari.geometry import PromptError, image_geometry
from napari_sansa.napari.objects_output import ObjectsOutput, split_frame
from napari_sansa.napari.outputs import (
    find_output,
    output_name,
    prepare_output,
    prepare_probabilities,
    references_layer,
)
from napari_sansa.napari.plan import NO_IMAGE, make_plan, memory_note
from napari_sansa.napari.worker import FrameResult, ModelCache, RunOutcome, RunSettings, run_frames
from napari_sansa.napari.writer import prefer_labels_tiff_writer

__all__ = ["EDITED_ACTION", "NO_IMAGE", "FrameReport", "SansaSession"]

#: the name of the action that takes the edited frames as references (a button in the widget)
EDITED_ACTION = "Use edited frames as references"

_SHOW = {"info": show_info, "warning": show_warning, "error": show_error}


@dataclass(frozen=True)
class FrameReport:
    """One frame a run finished: ``kind`` is 'reference', 'predicted' or 'kept' (an
    edited frame the run left as it was)."""

    frame: int
    scores: dict
    kind: str
    label: str
    counts: dict | None = None  # objects per class, with RunSettings.instances


def _frames_text(frames) -> str:
    frames = list(frames)
    return f"frame {frames[0]}" if len(frames) == 1 else f"frames {', '.join(map(str, frames))}"


class SansaSession:
    """Runs, corrections and saving for one viewer."""

    status = Signal(str)  # every message shown to the person
    frame_written = Signal(object)  # a FrameReport, for each frame a run finished
    running = Signal(bool)  # a run started (True) or ended (False)

    def __init__(self, viewer, models: ModelCache | None = None):
        self.viewer = viewer
        #: where the worker gets its model: one cache, loaded in the worker, kept between runs
        self.models = ModelCache() if models is None else models
        self.worker = None
        self.plan = None
        self.output = None
        self.objects = None  # ObjectsOutput of the current (or last) run with objects
        self.done = 0
        self.kept: tuple[int, ...] = ()  # edited frames the current (or last) run left alone
        self.message = ""
        self.alive = True
        self._probability_layers: dict[int, object] = {}
        self._cancel = threading.Event()
        self._stopped = False
        self._failed: str | None = None
        prefer_labels_tiff_writer()

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
    def run(
        self,
        image,
        prompt_layers,
        model_settings,
        settings: RunSettings | None = None,
        frame_range: tuple[int, int] | None = None,
    ):
        """Label the frames of ``image`` without prompts; returns the started worker, or
        None when the inputs cannot be used (the reason is shown)."""
        if self.busy():
            return self.worker
        settings = RunSettings() if settings is None else settings
        layers = [layer for layer in prompt_layers if layer in self.viewer.layers]
        try:
            plan = make_plan(image, layers, frame_range)
        except PromptError as exc:
            self.fail(str(exc))
            return None
        from napari.qt.threading import create_worker

        self.output = prepare_output(self.viewer, image, plan)
        self._probability_layers = (
            prepare_probabilities(self.viewer, image, plan) if settings.probabilities else {}
        )
        self.plan = plan
        opts = settings.instances
        self.objects = None if opts is None else ObjectsOutput(self.viewer, opts, [image])
        self.done, self.kept, self._stopped, self._failed = 0, (), False, None
        self._cancel = threading.Event()
        cached = self.models.has(model_settings)
        loading = "" if cached else f"loading {model_settings.describe()}, "
        self.notify(
            f"{loading}{len(plan.references)} reference frame(s), {len(plan.targets)} to label",
            popup=False,
        )
        note = memory_note(plan)
        if note is not None:
            show_warning(note)
        worker = create_worker(
            run_frames,
            plan,
            model_settings,
            settings,
            self.models,
            self._cancel,
            _progress={"total": plan.total, "desc": f"SANSA: {image.name}"},
            _start_thread=False,
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.running.emit(True)
        worker.start()
        return worker

    def busy(self) -> bool:
        """Whether a run is going (then says so)."""
        if self.worker is not None:
            self.notify("SANSA is already running: wait for it, or press Stop")
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
        output = self.output
        if output not in self.viewer.layers:
            show_warning(f"the output layer '{output.name}' was removed: the run stops")
            self.stop()
            return
        geometry = self.plan.geometry
        index = geometry.index(result.frame)
        if edits.is_edited(output, geometry, result.frame):
            kind = "kept"
            self.kept = (*self.kept, result.frame)
        else:
            kind = "reference" if result.is_reference else "predicted"
            output.data[index] = result.labels
            edits.record(output, result.frame, result.labels)
            output.refresh()
        for c, p in (result.probabilities or {}).items():
            layer = self._probability_layers.get(c)
            if layer is not None and layer in self.viewer.layers:
                layer.data[index] = p
                layer.refresh()
        counts = None
        if self.objects is not None:  # the objects of what the layer now holds
            pair = result.objects if kind != "kept" else split_frame(
                np.asarray(output.data[index]), self.objects.options)  # fmt: skip
            counts = self.objects.write(getattr(result, "part", 0), result.frame, pair)
        self.done += 1
        report = FrameReport(result.frame, result.scores, kind, geometry.describe(result.frame),
                             counts=counts)  # fmt: skip
        self.frame_written.emit(report)
        self.notify(f"{self.done} / {self.plan.total} frames done", popup=False)

    def _on_returned(self, outcome: RunOutcome) -> None:
        if outcome is not None and outcome.error:
            self._failed = outcome.error
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
            self.objects.finish()  # ids in frame order, as a re-run gives them
        self.running.emit(False)
        total = self.plan.total if self.plan is not None else 0
        if self._failed:
            self.notify(self._failed, popup=False)
            return
        if self._stopped:
            message = f"stopped: {self.done} of {total} frames done"
        else:
            message = f"done: {self.done} frames"
        if not self.kept:
            self.notify(message, popup=False)
            return
        self.notify(
            f"{message}; kept {_frames_text(self.kept)} as you edited by hand (not "
            f"overwritten). '{EDITED_ACTION}' makes your edits references for the next run",
            "warning",
        )

    # -- corrections --------------------------------------------------------------------
    def promote(
        self, image, frame: int, classes=None, *, replace: bool = False, announce: bool = True
    ):
        """Take ``classes`` of ``frame`` of the output layer into the image's references
        layer (made if needed); the next run uses them as references. Returns that layer,
        or None (the reason is shown).

        ``classes``: the class ids to take, or "all"; by default those edited by hand
        since SANSA wrote the frame. A reference already on that frame is never changed unless
        ``replace`` (then the classes taken replace theirs there). ``announce``: also
        as a notification (errors always are).
        """
        if image is None:
            self.fail(NO_IMAGE)
            return None
        output = self.output_layer(image)
        if output is None:
            self.fail(
                f"there is no output layer '{output_name(image.name)}' yet: run SANSA first, "
                "then fix a frame in it"
            )
            return None
        geometry = image_geometry(image)
        where = geometry.describe(frame)
        index = geometry.index(frame)
        plane = np.asarray(output.data[index])
        if not plane.any():
            self.fail(
                f"{where} of '{output.name}' is empty: paint the objects in it (or run SANSA) "
                "before using it as a reference"
            )
            return None
        if classes is None:
            classes = edits.edited_classes(output, geometry, frame)
            if not classes:
                self.fail(
                    f"{where} of '{output.name}' has no hand edits since SANSA wrote it: paint "
                    "the corrections first, or choose the class to take"
                )
                return None
        if isinstance(classes, str) and classes == "all":
            classes = np.unique(plane)[1:].tolist()
        classes = tuple(sorted({int(c) for c in classes}))
        present = set(np.unique(plane).tolist())
        missing = [c for c in classes if c not in present]
        if missing:
            self.fail(f"{where} of '{output.name}' has no pixels of {_classes_text(missing)}")
            return None
        active = self.viewer.layers.selection.active
        refs = references_layer(self.viewer, image, label_dtype(max(classes)))
        if active is not None and self.viewer.layers.selection.active is not active:
            self.viewer.layers.selection.active = active  # keep painting where they were
        if np.iinfo(refs.data.dtype).max < max(classes):
            self.fail(
                f"'{refs.name}' holds class ids up to {np.iinfo(refs.data.dtype).max} "
                f"({refs.data.dtype}): class {max(classes)} does not fit; rename that layer "
                "to start a new references layer"
            )
            return None
        current = np.asarray(refs.data[index])
        new = current.copy()
        if replace:
            new[np.isin(current, classes)] = 0
        for c in classes:
            new[plane == c] = c
        ours = [c for c in classes if np.any(current == c)]
        changed = (current != 0) & (new != current)
        if not replace and (ours or changed.any()):
            theirs = sorted(set(np.unique(current[current != 0]).tolist()))
            self.fail(
                f"{where} already has a reference in '{refs.name}' ({_classes_text(theirs)}) that "
                "this would change: erase it there first, to take this frame's classes instead"
            )
            return None
        refs.data[index] = new  # in place: the layer keeps its array
        refs.refresh()
        if present - {0} <= set(classes):
            edits.accept(output, geometry, frame)  # the whole frame is a reference now
        self.notify(
            f"{where}: {_classes_text(classes)} taken as a reference (in '{refs.name}'); the next "
            "run uses it",
            popup=announce,
        )
        return refs

    def promote_edited(self, image) -> list[int]:
        """Take the edited classes of every edited frame as references; returns the
        frames taken (a frame whose reference would change is left, with a message)."""
        frames = self.edited_frames(image)
        if not frames:
            output = self.output_layer(image)
            if output is None:
                self.promote(image, 0)  # says why: no image, or no output yet
            else:
                self.fail(f"no frame of '{output.name}' was edited by hand since SANSA wrote it")
            return []
        taken = [f for f in frames if self.promote(image, f, announce=False) is not None]
        if taken:
            self.notify(f"{_frames_text(taken)}: now references; the next run uses them")
        return taken

    # -- saving -------------------------------------------------------------------------
    def save_frames(self, image, folder, fmt: str = "tif") -> list[str]:
        """Write the output layer of ``image`` as one file per frame; returns the paths."""
        from napari_sansa.napari.writer import write_frames

        output = self.output_layer(image)
        if output is None:
            self.fail("there is nothing to save yet: run SANSA first")
            return []
        if folder is None:
            self.fail("choose a folder to save the frames in ('save to')")
            return []
        try:
            paths = write_frames(folder, output.data, fmt, prefix=image.name)
        except (OSError, ValueError) as exc:
            self.fail(f"could not save the frames: {exc}")
            return []
        self.notify(f"saved {len(paths)} frame(s) in {Path(folder)}")
        return paths


def _classes_text(classes) -> str:
    classes = list(classes)
    if len(classes) == 1:
        return f"class {classes[0]}"
    return f"classes {', '.join(map(str, classes))}"
