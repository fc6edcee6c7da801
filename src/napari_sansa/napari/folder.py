"""A folder on disk labelled from napari: the engine of ``napari-sansa segment``.

:class:`FolderRun` takes the references from the viewer's prompt layers when Run is
pressed (frozen then: removing or editing layers during the run changes nothing),
checks the folders in the widget's words, and runs
:func:`~napari_sansa.dataset.segment_dataset_iter` in a napari thread worker: every
output is written atomically into the output folder as the command line writes it
(same files, ``scores.csv``, the folder's lock), finished outputs are skipped, so a
second Run resumes. Stop, or the viewer closing, ends the run after the frame in
progress; nothing half-written is left. Finished outputs can be opened over their
image (:meth:`FolderRun.open_result`). Main thread only, but for the worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from napari_sansa.dataset.manifest import NAME_ERRORS
from napari_sansa.dataset.rows import CSV_NAME
from napari_sansa.dataset.settings import DatasetOptions
from napari_sansa.napari.geometry import META_KEY, PromptError
from napari_sansa.napari.imageset import SetPlan, assign_prompt_layers
from napari_sansa.napari.layers import quoted_names
from napari_sansa.napari.messages import option_name
from napari_sansa.napari.plan import NO_IMAGE, no_layers_problem, plan_image
from napari_sansa.napari.worker import (
    ModelCache,
    RunSettings,
    leave_a_core_for_napari,
    start_worker,
    worker_factory,
)

_SHOW = {"info": show_info, "warning": show_warning, "error": show_error}

__all__ = ["FolderJob", "FolderOutcome", "FolderResult", "FolderRun", "folder_references"]


@dataclass(frozen=True)
class FolderResult:
    """One entry of the run: an input file, its label file (None when it failed) and why."""

    source: Path
    output: Path | None
    status: str  # ok, blank, failed, reference
    message: str = ""
    folder: str = ""  # its sub-folder of the output folder ('' at the top), as written

    @property
    def text(self) -> str:
        """The line shown in the widget's list: the image's name, under its sub-folder
        (images of the same name in two sub-folders are two lines that differ)."""
        name = f"{self.folder}/{self.source.name}" if self.folder else self.source.name
        if self.output is None:
            return f"{name}: not labelled ({self.status})"
        return name  # its label file: same name, .tif (the row's tooltip)


def _sub_folder(output: str | None) -> str:
    """The sub-folder part of a label file's path relative to the output folder."""
    parent = Path(output).parent.as_posix() if output else "."
    return "" if parent == "." else parent


@dataclass(frozen=True, eq=False)
class FolderJob:
    """What a folder run does, read from the widget and the layers when Run is pressed."""

    input: Path
    output: Path
    references: tuple  # core References, taken from the prompt layers
    intensity_range: tuple | None
    model: object  # a ModelSource
    settings: RunSettings


@dataclass(frozen=True)
class FolderOutcome:
    """What the worker returned: the run's report, or a message for the person."""

    report: object = None
    error: str | None = None
    details: str | None = None


def check_folders(input_folder, output_folder) -> tuple[Path, Path]:
    """The two folders, resolved, or a PromptError in the widget's words."""
    if not str(input_folder or "").strip() or str(input_folder) == ".":
        raise PromptError("choose the folder of images to label under 'images in'")
    if not str(output_folder or "").strip() or str(output_folder) == ".":
        raise PromptError(
            "choose where the labels go under 'labels to' (a new or empty folder, outside "
            "the input folder)"
        )
    src = Path(input_folder).expanduser()
    out = Path(output_folder).expanduser()
    if not src.is_dir():
        what = "is a file, not a folder" if src.exists() else "does not exist"
        raise PromptError(f"the input folder {src} {what}: choose a folder of images")
    src, out = src.resolve(), out.resolve()
    if out == src or out.is_relative_to(src):
        where = "is the input folder" if out == src else "is inside the input folder"
        raise PromptError(
            f"the output folder {out} {where}: the labels would be mixed with the images and "
            "read as images by the next run. Choose an output folder outside "
            f"{src} (nothing was written)"
        )
    if out.exists() and not out.is_dir():
        raise PromptError(f"the output folder {out} is a file: choose a folder")
    return src, out


def folder_references(images, prompt_layers):
    """``(References, intensity range)`` from the prompt layers on ``images`` (image
    layers), read now; a PromptError says what is missing."""
    import napari_sansa as ns
    from napari_sansa.napari.worker import SetFrames

    images = [image for image in images if image is not None]
    if not images:
        raise PromptError(NO_IMAGE)
    layers = list(prompt_layers)
    if not layers:
        raise PromptError(no_layers_problem())
    assigned = assign_prompt_layers(images, layers) if len(images) > 1 else [layers]
    plan = SetPlan(tuple(plan_image(im, own) for im, own in zip(images, assigned, strict=True)))
    if not plan.references:
        raise PromptError(
            f"the prompt layers ({quoted_names(layer.name for layer in layers)}) hold no prompts "
            f"for {quoted_names(image.name for image in images)}: mark the objects on one or a "
            "few images, then Run to label the folder from them"
        )
    shared, intensity = plan.shared_intensity_range()
    if not shared:
        raise PromptError(
            "the reference images are shown with different contrast settings: the folder's "
            "images are all scaled one way, so use references of one kind (all 8-bit, or the "
            "same contrast limits)"
        )
    reader = SetFrames(plan, (), scale=False)
    refs = tuple(ns.Reference(reader.read(i, r.frame), r.prompts) for i, r in plan.references)
    return refs, intensity


def run_folder(job: FolderJob, models: ModelCache, cancel: threading.Event, names=None):
    """Generator for the worker: one DatasetProgress per finished frame; returns a
    :class:`FolderOutcome`. ``cancel`` (Stop, the viewer closing) ends the engine's run
    by itself after the frame in progress, also when napari stops asking for steps."""
    from napari_sansa.core.errors import SansaError
    from napari_sansa.dataset import segment_dataset_iter
    from napari_sansa.napari.messages import gui_message

    options = replace(job.settings.segment, intensity_range=job.intensity_range)
    tracks = job.settings.tracks  # TrackSettings (the 'tracks' box) or None
    linked = {}
    if tracks is not None:  # every time-lapse of the folder: the command line's --tracks
        linked = {"tracks": True, "follow": tracks.follow, "max_move": tracks.max_distance}
    try:
        options = DatasetOptions.make(options, probabilities=job.settings.probabilities, **linked)
        with leave_a_core_for_napari(getattr(job.model, "threads", None)):
            model = models.get(job.model)
            run = segment_dataset_iter(
                job.input,
                list(job.references),
                job.output,
                options,
                model=model,
                cancel=cancel,
            )
            try:
                while True:
                    try:
                        step = next(run)
                    except StopIteration as stop:
                        return FolderOutcome(stop.value)
                    yield step
            finally:
                run.close()
    except (SansaError, ValueError, OSError, MemoryError) as exc:
        return FolderOutcome(None, *gui_message(exc, job.model, names))


def _tracks_of(path: Path, result: FolderResult) -> bool:
    """Whether ``path`` holds the tracks napari-sansa linked for ``result``'s image in the
    run of its labels (not a file of the user's, nor the labels of an input of that
    name, nor the tracks of an earlier run)."""
    from napari_sansa.dataset.outputs import read_record
    from napari_sansa.dataset.records import same_source

    if not path.is_file():
        return False
    info, labels = read_record(path), read_record(result.output)
    return bool(
        info is not None
        and labels is not None
        and info.get("output") == "tracks"
        and same_source(info.get("source"), str(result.source))
        and info.get("run") == labels.get("run")
    )


class FolderRun:
    """Folder runs of one viewer: start, Stop, the finished outputs, opening them."""

    status = Signal(str)  # every message for the person
    running = Signal(bool)
    progress = Signal(int, int)  # frames done, frames in all
    result = Signal(object)  # a FolderResult, as each output is finished (or fails)

    def __init__(self, viewer, models: ModelCache | None = None, create_worker=None):
        self.viewer = viewer
        self.create_worker = create_worker  # napari's (._qt.workers), given by the widget
        self.names = option_name  # how errors call the options (the widget's labels)
        self.models = ModelCache() if models is None else models
        self.worker = None
        self.job: FolderJob | None = None
        self.results: list[FolderResult] = []
        self.report = None
        self.message = ""
        self.details = ""
        self.alive = True
        self._cancel = threading.Event()
        self._error: str | None = None

    def notify(self, message: str, severity: str | None = None) -> None:
        self.message = message
        if self.alive:
            self.status.emit(message)
            if severity is not None:
                _SHOW[severity](message)

    def busy(self) -> bool:
        return self.worker is not None

    def start(self, input_folder, output_folder, images, prompt_layers, model, settings):
        """Label every image under ``input_folder`` into ``output_folder`` from the prompt
        layers on ``images``; returns the started worker, or None (the reason is shown)."""
        if self.busy():
            self.notify("the folder run is going: wait for it, or press Stop")
            return self.worker
        try:
            src, out = check_folders(input_folder, output_folder)
            refs, intensity = folder_references(images, prompt_layers)
        except PromptError as exc:
            self.details = ""
            self.notify(str(exc), "error")
            return None
        create_worker = worker_factory(self)
        self.job = FolderJob(src, out, refs, intensity, model, settings)
        self.results, self.report, self.details = [], None, ""
        self._cancel = threading.Event()
        loading = "" if self.models.has(model) else f"loading {model.describe()}, "
        self.notify(f"{loading}labelling {src} into {out} from {len(refs)} reference image(s)")
        worker = create_worker(
            run_folder, self.job, self.models, self._cancel, self.names, _start_thread=False
        )
        return start_worker(self, worker, self._on_step)

    def stop(self) -> None:
        """Stop after the frame in progress; what is finished stays, Run resumes."""
        if self.worker is None or self._cancel.is_set():
            return
        self._cancel.set()
        self.notify("stopping after the image in progress...")

    def close(self, *_) -> None:
        """The viewer or the widget went away: stop the run, emit nothing more."""
        self.alive = False
        self._cancel.set()

    # -- worker signals (main thread) ---------------------------------------------------
    def _on_step(self, step) -> None:
        if not self.alive:
            return
        for r in step.rows:
            source = Path(r["target"])
            output = step.out / r["output"] if r["output"] else None
            if r["status"] in ("ok", "blank") and any(x.output == output for x in self.results):
                continue  # a stack: one entry
            result = FolderResult(source, output, r["status"], r.get("message", ""),
                                  _sub_folder(r["output"]))  # fmt: skip
            self.results.append(result)
            self.result.emit(result)
        self.progress.emit(step.done, step.total)
        if not self._cancel.is_set():
            self.notify(f"{step.done} / {step.total} images done ({self.job.output.name})")

    def _on_returned(self, outcome: FolderOutcome) -> None:
        if outcome.error is not None:
            self.details = outcome.details or outcome.error
            self.report = None
            self._error = outcome.error
            return
        self.report = outcome.report

    def _on_errored(self, exc: Exception) -> None:
        self._error = f"{type(exc).__name__}: {exc}"

    def _on_finished(self) -> None:
        self.worker = None
        error, self._error = self._error, None
        if not self.alive:
            return
        if self.report is not None and self.report.csv is not None:
            self._list_finished(self.report.csv)
        elif self.job is not None:  # refused (or failed) before it listed anything: the
            # outputs already in the folder stay listed, to open
            self._list_finished(self.job.output / CSV_NAME)
        self.running.emit(False)
        if error is not None:
            self.notify(error, "error")
            return
        r = self.report
        if r is None:
            self.notify("the folder run stopped")
            return
        failed = f", {len(r.failed)} not readable (see the list)" if r.failed else ""
        where = f"'{r.out.name}'"  # the whole path is in the status's tooltip
        if r.cancelled:
            self.notify(
                f"stopped: {r.done} image(s) labelled{failed}; Run goes on where it stopped "
                f"(what is in {where} is kept)"
            )
        elif r.done == 0 and r.skipped and not r.failed:
            self.notify(f"nothing to do: all {r.skipped} outputs in {where} are finished")
        else:
            before = f", {r.skipped} finished before" if r.skipped else ""
            tracks = r.tracks_csv
            linked = f"; tracks in '{tracks.name}'" if tracks is not None else ""
            self.notify(  # the list says how to open one
                f"done: {r.done} image(s) labelled into {where}{failed}{before}{linked}",
                "warning" if r.failed else None,
            )

    # -- results ------------------------------------------------------------------------
    def _list_finished(self, csv_path: Path) -> None:
        """Add the outputs finished by earlier runs (in ``scores.csv``) to the results."""
        import csv

        try:
            # file names that are not UTF-8 are kept as their bytes, as the CSV was written
            with open(csv_path, newline="", encoding="utf-8", errors=NAME_ERRORS) as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, ValueError, csv.Error):  # unreadable or not a CSV
            return
        folder = csv_path.parent.resolve()
        known = {r.output for r in self.results} | {r.source for r in self.results}
        for row in rows:
            if not isinstance(row.get("target"), str) or not row["target"]:
                continue  # not a row napari-sansa wrote
            output = csv_path.parent / row["output"] if row.get("output") else None
            if output is not None and not output.resolve().is_relative_to(folder):
                output = None  # an output is always inside the output folder
            source = Path(row["target"])
            if (output or source) in known:
                continue
            known.add(output or source)
            result = FolderResult(source, output, row.get("status", ""), row.get("message", ""),
                                  _sub_folder(row.get("output") if output else None))  # fmt: skip
            self.results.append(result)
            self.result.emit(result)

    def open_result(self, result: FolderResult):
        """Show ``result``'s image and its labels in the viewer: (image layer, labels
        layer). An image already shown under its name (same shape) is reused. A
        time-lapse linked into tracks also gets its track labels (``<name>_tracks.tif``)
        as a Labels layer '<name> tracks (<folder>)'."""
        from napari_sansa.dataset.discovery import Target
        from napari_sansa.dataset.io import read_image

        if result.output is None or not result.output.is_file():
            self.notify(f"{result.source.name} has no label file: {result.message}", "warning")
            return None
        image = read_image(result.source)
        labels = read_image(result.output)
        name = result.source.stem
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if layer is None or tuple(layer.data.shape) != image.shape:
            rgb = image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4)
            layer = self.viewer.add_image(image, name=name, rgb=rgb)
        where = result.output.parent.name
        # marked as a result: listed among the prompt layers, but not ticked by itself
        # (it would change the folder's references: Run would then refuse the folder)
        out = self.viewer.add_labels(
            labels, name=f"{name} labels ({where})", metadata={META_KEY: "result"}
        )
        out.scale, out.translate = layer.scale[-labels.ndim :], layer.translate[-labels.ndim :]
        tracks = Path(Target(str(result.source), str(result.output)).tracks_output)
        if _tracks_of(tracks, result):  # track ids are no classes: never a prompt layer
            linked = self.viewer.add_labels(
                read_image(tracks), name=f"{name} tracks ({where})",
                metadata={META_KEY: "result tracks"},
            )  # fmt: skip
            linked.scale, linked.translate = out.scale, out.translate
        return layer, out
