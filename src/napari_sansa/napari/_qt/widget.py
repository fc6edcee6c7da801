"""The SANSA dock widget: mark a few frames, press Run, the rest of the stack is labelled.

The widget is thin: it reads layers and settings on the main thread into frozen
values (:mod:`napari_sansa.napari.layers`, :mod:`napari_sansa.napari.worker`), runs the core's generator in a
napari worker, and writes each finished frame into a Labels layer of its own
("<image> [sansa]") from the ``yielded`` signal, on the main thread.
"""

from __future__ import annotations

import sys
import threading
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from napari_sansa.napari.layers import (
    fit_problem,
    image_geometry,
    is_prompt_layer,
    layer_role,
    make_plan,
)
from napari_sansa.napari.outputs import (
    defaults_event,
    find_output,
    new_points_layer,
    new_shapes_layer,
    output_name,
    prepare_output,
    prepare_probabilities,
    read_prompt_defaults,
    references_layer,
    write_prompt_defaults,
)
from napari_sansa.napari._qt.model_panel import ModelPanel, path_value
from napari_sansa.napari._qt.scores import ScoreTable
from napari_sansa.napari.worker import (
    FrameResult,
    ModelCache,
    RunOutcome,
    RunSettings,
    run_frames,
)

if TYPE_CHECKING:
    import napari

__all__ = ["SansaWidget"]


class _Guard:
    """Outlives the widget's Qt side: lets late worker signals find it gone."""

    def __init__(self):
        self.alive = True
        self.worker = None


def _on_native_destroyed(guard: _Guard, *_):
    guard.alive = False
    if guard.worker is not None:
        guard.worker.quit()


def _warm_imports() -> None:
    """Import torch and the engine (about a second of module code that holds the GIL)."""
    import napari_sansa.core.models.loading  # noqa: F401 - torch, sam2, the model classes


def warm_up_in_background() -> threading.Thread | None:
    """Start the engine's imports on a background thread, if they are not done yet.

    The widget calls this when it opens, so that the imports run while a person
    marks the references, and not during the first run (where they froze napari
    for up to a second).
    """
    if "napari_sansa.core.models.loading" in sys.modules:
        return None
    thread = threading.Thread(target=_warm_imports, name="napari-sansa-imports", daemon=True)
    thread.start()
    return thread


def _row(*widgets) -> Container:
    row = Container(layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    return row


def _heading(text: str) -> Label:
    return Label(value=f"<b>{text}</b>")


class SansaWidget(Container):
    """Few-shot segmentation of an image stack with SANSA."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()  # napari docks .native: a magicgui scroll area would be dropped
        self._viewer = viewer
        self._cache = ModelCache()
        self._worker = None
        self._plan = None
        self._output = None
        self._probability_layers: dict[int, object] = {}
        self._done = 0
        self._stopped = False
        self._failed: str | None = None
        self._seen: weakref.WeakSet = weakref.WeakSet()
        self._watched = None  # weak reference to the active prompt layer
        self._guard = _Guard()

        # -- inputs -------------------------------------------------------------------
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._prompts = Select(
            label="prompt layers",
            choices=self._prompt_choices,
            tooltip="Points, Shapes and Labels layers holding the prompts; a frame with "
            "any prompt is a reference, the others are labelled",
        )
        self._new_points = PushButton(text="+ points", tooltip="new Points layer for clicks")
        self._new_shapes = PushButton(text="+ shapes", tooltip="new Shapes layer for boxes, ...")
        self._new_labels = PushButton(text="+ labels", tooltip="Labels layer to paint masks in")
        self._class_id = SpinBox(
            label="class",
            min=1,
            max=65535,
            value=1,
            tooltip="class id of the next prompt in the selected Points/Shapes/Labels layer",
        )
        self._polarity = RadioButtons(
            label="click",
            choices=["positive", "negative"],
            value="positive",
            orientation="horizontal",
            tooltip="positive: a click on the object; negative: a click that is not",
        )
        # -- model --------------------------------------------------------------------
        self._model_panel = ModelPanel()
        # its children, under the names the tests and this widget use
        self._model = self._model_panel._model
        self._config = self._model_panel._config
        self._sam2_file = self._model_panel._sam2_file
        self._adapter_file = self._model_panel._adapter_file
        self._device = self._model_panel._device
        self._image_size = self._model_panel._image_size
        # -- run ----------------------------------------------------------------------
        self._mode = ComboBox(
            label="mode",
            choices=["independent", "sequential"],
            tooltip="independent: each frame sees only the references; sequential: frames "
            "in order, each also sees the previous ones (time-lapses, z-stacks)",
        )
        self._threshold = FloatSpinBox(label="threshold", min=0.0, max=1.0, step=0.05, value=0.5)
        self._input_size = ComboBox(
            label="input size",
            choices=[("640 (authors')", 640), ("none", 0)],
            value=640,
            tooltip="the authors' intermediate resize; none: straight to the model's size",
        )
        self._first = SpinBox(label="first frame", min=0, max=0)
        self._last = SpinBox(label="last frame", min=0, max=0)
        self._probabilities = CheckBox(text="probability maps", value=False)
        self._run_button = PushButton(text="Run")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(min=0, max=1, value=0, label="progress")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        # -- results ------------------------------------------------------------------
        self._use_frame = PushButton(
            text="Use current frame as reference",
            tooltip="copy the shown frame of the output (after fixing it) into the "
            "references layer; the next run uses it",
        )
        self._scores = ScoreTable()
        self._save_folder = FileEdit(label="save to", mode="d", nullable=True)
        self._save_format = ComboBox(label="format", choices=["tif", "png"])
        self._save_button = PushButton(text="Save frames", tooltip="one file per frame")

        self._results_box = Container(widgets=[self._use_frame], labels=False)
        self._results_box.native.layout().addWidget(self._scores)
        self._prompts.native.setMaximumHeight(90)
        self.extend(
            [
                self._image,
                self._prompts,
                _row(self._new_points, self._new_shapes, self._new_labels),
                self._class_id,
                self._polarity,
                _heading("Model"),
                *self._model_panel.widgets,
                _heading("Run"),
                self._mode,
                self._threshold,
                self._input_size,
                self._first,
                self._last,
                self._probabilities,
                _row(self._run_button, self._stop_button),
                self._progress,
                self._status,
                _heading("Results"),
                self._results_box,
                self._save_folder,
                self._save_format,
                self._save_button,
            ]
        )

        self._image.changed.connect(self._on_image_changed)
        self._class_id.changed.connect(self._on_prompt_defaults_changed)
        self._polarity.changed.connect(self._on_prompt_defaults_changed)
        self._new_points.changed.connect(self._on_new_points)
        self._new_shapes.changed.connect(self._on_new_shapes)
        self._new_labels.changed.connect(self._on_new_labels)
        self._run_button.changed.connect(self._on_run_clicked)
        self._stop_button.changed.connect(self._on_stop_clicked)
        self._use_frame.changed.connect(self._on_use_frame_clicked)
        self._save_button.changed.connect(self._on_save_clicked)
        self._scores.frame_clicked.connect(self.go_to_frame)
        layers = viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved, layers.renamed):
            event.connect(self.reset_choices)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        self.native.destroyed.connect(partial(_on_native_destroyed, self._guard))

        self.reset_choices()
        self._on_image_changed()
        self._warmup = warm_up_in_background()

    # -- choices ----------------------------------------------------------------------
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and layer_role(layer) is None
        ]

    def _prompt_choices(self, _widget=None):
        return [
            (f"{layer.name} ({type(layer).__name__.lower()})", layer)
            for layer in self._viewer.layers
            if is_prompt_layer(layer)
        ]

    def _fits(self, layer) -> bool:
        image = self._image.value
        if image is None:
            return False
        try:
            return fit_problem(image, layer) is None
        except ValueError:
            return False

    # -- callbacks: layers --------------------------------------------------------------
    def reset_choices(self, *_) -> None:
        """Follow the viewer's layers: keep the chosen prompt layers (also through
        renames), and choose new ones that fit the image."""
        if not self._guard.alive:
            return
        chosen = list(self._prompts.value)
        super().reset_choices()
        candidates = [value for _, value in self._prompt_choices()]
        new = [layer for layer in candidates if layer not in self._seen]
        for layer in new:
            self._seen.add(layer)
        keep = [layer for layer in chosen if layer in candidates]
        keep += [layer for layer in new if layer not in keep and self._fits(layer)]
        if keep != list(self._prompts.value):
            self._prompts.value = keep

    def _on_image_changed(self, value=None) -> None:
        image = self._image.value
        candidates = [value for _, value in self._prompt_choices()]
        self._prompts.value = [layer for layer in candidates if self._fits(layer)]
        n = 1
        if image is not None:
            try:
                n = image_geometry(image).n_frames
            except ValueError:
                n = 1
        for w in (self._first, self._last):
            w.max = max(n - 1, 0)
            w.enabled = n > 1
        self._first.value, self._last.value = 0, n - 1

    def _on_active_layer(self, event=None) -> None:
        """Follow the active layer: show the class (and polarity) of its next item."""
        if not self._guard.alive:
            return
        old = self._watched() if self._watched is not None else None
        if old is not None:
            defaults_event(old).disconnect(self._pull_prompt_defaults)
        layer = self._viewer.layers.selection.active
        emitter = defaults_event(layer)
        self._watched = None
        if emitter is not None:
            emitter.connect(self._pull_prompt_defaults)
            self._watched = weakref.ref(layer)
        self._pull_prompt_defaults()

    def _pull_prompt_defaults(self, event=None) -> None:
        if not self._guard.alive:
            return
        label, positive = read_prompt_defaults(self._viewer.layers.selection.active)
        with self._class_id.changed.blocked(), self._polarity.changed.blocked():
            if label is not None:
                self._class_id.value = label
            if positive is not None:
                self._polarity.value = "positive" if positive else "negative"

    def _on_prompt_defaults_changed(self, value=None) -> None:
        """Class selector and polarity toggle -> what the active layer gives its next item."""
        write_prompt_defaults(
            self._viewer.layers.selection.active,
            self._class_id.value,
            self._polarity.value == "positive",
        )

    def _on_new_points(self, value=None) -> napari.layers.Points | None:
        image = self._require_image()
        if image is None:
            return None
        positive = self._polarity.value == "positive"
        return new_points_layer(self._viewer, image, self._class_id.value, positive)

    def _on_new_shapes(self, value=None) -> napari.layers.Shapes | None:
        image = self._require_image()
        if image is None:
            return None
        return new_shapes_layer(self._viewer, image, self._class_id.value)

    def _on_new_labels(self, value=None) -> napari.layers.Labels | None:
        image = self._require_image()
        if image is None:
            return None
        label = int(self._class_id.value)
        layer = self._references_layer(image, np.uint8)
        layer.selected_label = label
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        return layer

    # -- callbacks: buttons -------------------------------------------------------------
    def _on_run_clicked(self, value=None) -> None:
        self.run()

    def _on_stop_clicked(self, value=None) -> None:
        self.stop()

    def _on_use_frame_clicked(self, value=None) -> None:
        self.use_current_frame_as_reference()

    def _on_save_clicked(self, value=None) -> None:
        self.save_frames()

    # -- helpers ------------------------------------------------------------------------
    def _require_image(self):
        image = self._image.value
        if image is None:
            self._fail("there is no image layer: open an image (a 2D image or a stack) first")
        return image

    def _fail(self, message: str) -> None:
        self._status.value = message
        show_error(message)

    def _run_settings(self) -> RunSettings:
        return RunSettings(
            mode=self._mode.value,
            input_size=int(self._input_size.value) or None,
            threshold=float(self._threshold.value),
            probabilities=bool(self._probabilities.value),
        )

    def output_layer(self, image=None) -> napari.layers.Labels | None:
        """The output Labels layer of ``image`` (by default the selected image), if any."""
        image = self._image.value if image is None else image
        return None if image is None else find_output(self._viewer, image)

    def _references_layer(self, image, dtype):
        """The image's references layer (made if needed), chosen as a prompt layer."""
        layer = references_layer(self._viewer, image, dtype)
        if layer not in self._prompts.value:
            self._prompts.value = [*self._prompts.value, layer]
        return layer

    # -- public actions -----------------------------------------------------------------
    @property
    def worker(self):
        """The running worker, or None."""
        return self._worker

    def run(self):
        """Label the frames without prompts; returns the (started) worker, or None
        when the inputs cannot be used (the reason is shown as a notification)."""
        if self._worker is not None:
            show_info("SANSA is already running: wait for it, or press Stop")
            return self._worker
        image = self._image.value
        try:
            model_settings = self._model_panel.settings()
            plan = make_plan(
                image,
                [layer for layer in self._prompts.value if layer in self._viewer.layers],
                (int(self._first.value), int(self._last.value)),
            )
        except ValueError as exc:
            self._fail(str(exc))
            return None
        from napari.qt.threading import create_worker

        settings = self._run_settings()
        self._output = prepare_output(self._viewer, image, plan)
        self._probability_layers = (
            prepare_probabilities(self._viewer, image, plan) if settings.probabilities else {}
        )
        self._plan = plan
        self._done, self._stopped, self._failed = 0, False, None
        self._scores.clear_rows()
        self._progress.max = plan.total
        self._show_progress(0)
        loading = (
            "" if self._cache.has(model_settings) else f"loading {model_settings.describe()}, "
        )
        self._status.value = (
            f"{loading}{len(plan.references)} reference frame(s), {len(plan.targets)} to label"
        )
        worker = create_worker(
            run_frames,
            plan,
            model_settings,
            settings,
            self._cache,
            _progress={"total": plan.total, "desc": f"SANSA: {image.name}"},
            _start_thread=False,
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = self._guard.worker = worker
        self._set_running(True)
        worker.start()
        return worker

    def stop(self) -> None:
        """Stop the run after the frame being computed."""
        if self._worker is not None:
            self._worker.quit()
            self._stop_button.enabled = False
            self._status.value = "stopping after the current frame..."

    def current_frame(self, image=None) -> int:
        """The frame of ``image`` shown by the viewer's sliders."""
        image = self._image.value if image is None else image
        geometry = image_geometry(image)
        if not geometry.leading:
            return 0
        data = np.asarray(image.world_to_data(self._viewer.dims.point), dtype=float)
        lead = np.clip(np.rint(data[: len(geometry.leading)]), 0, np.asarray(geometry.leading) - 1)
        return geometry.frame(lead)

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's sliders to a frame of the selected image."""
        image = self._image.value
        if image is None or not self._guard.alive:
            return
        geometry = image_geometry(image)
        index = geometry.index(frame)
        world = image.data_to_world([*index, 0, 0])
        offset = self._viewer.dims.ndim - image.ndim
        for k in range(len(index)):
            self._viewer.dims.set_point(offset + k, world[k])

    def use_current_frame_as_reference(self):
        """Copy the shown frame of the output layer into the image's references layer
        (made if needed); the next run uses it as a reference. Returns that layer."""
        image = self._require_image()
        if image is None:
            return None
        output = self.output_layer(image)
        if output is None:
            self._fail(
                f"there is no output layer '{output_name(image.name)}' yet: run SANSA first, "
                "then fix a frame in it"
            )
            return None
        geometry = image_geometry(image)
        frame = self.current_frame(image)
        index = geometry.index(frame)
        plane = np.array(output.data[index])
        if not plane.any():
            self._fail(
                f"{geometry.describe(frame)} of '{output.name}' is empty: paint the objects in "
                "it (or run SANSA) before using it as a reference"
            )
            return None
        refs = self._references_layer(image, output.data.dtype)
        if np.iinfo(refs.data.dtype).max < plane.max():
            refs.data = np.asarray(refs.data).astype(plane.dtype)
        refs.data[index] = plane
        refs.refresh()
        message = f"{geometry.describe(frame)} is now a reference (in '{refs.name}')"
        self._status.value = message
        show_info(message)
        return refs

    def save_frames(self, folder=None, fmt=None) -> list[str]:
        """Write the output layer as one file per frame; returns the paths."""
        from napari_sansa.napari.writer import write_frames

        image = self._require_image()
        output = self.output_layer(image) if image is not None else None
        if output is None:
            if image is not None:
                self._fail("there is nothing to save yet: run SANSA first")
            return []
        folder = folder if folder is not None else path_value(self._save_folder)
        if folder is None:
            self._fail("choose a folder to save the frames in ('save to')")
            return []
        try:
            paths = write_frames(
                folder, output.data, fmt or self._save_format.value, prefix=image.name
            )
        except (OSError, ValueError) as exc:
            self._fail(f"could not save the frames: {exc}")
            return []
        message = f"saved {len(paths)} frame(s) in {Path(folder)}"
        self._status.value = message
        show_info(message)
        return paths

    # -- worker signals (main thread) ---------------------------------------------------
    def _set_running(self, running: bool) -> None:
        self._run_button.enabled = not running
        self._stop_button.enabled = running

    def _show_progress(self, done: int) -> None:
        # QProgressBar.setValue repaints at once (synchronously), which costs a whole
        # window repaint per frame (0.1 s on Xvfb/Mesa); with updates off it only
        # schedules a repaint, drawn with the canvas in the next event loop turn
        bar = self._progress.native
        bar.setUpdatesEnabled(False)
        self._progress.value = done
        bar.setUpdatesEnabled(True)

    def _on_yielded(self, result: FrameResult) -> None:
        if not self._guard.alive or self._plan is None:
            return
        output = self._output
        if output not in self._viewer.layers:
            if not self._stopped:
                self._stopped = True
                show_warning(f"the output layer '{output.name}' was removed: the run stops")
                self.stop()
            return
        index = self._plan.geometry.index(result.frame)
        output.data[index] = result.labels
        output.refresh()
        for c, p in (result.probabilities or {}).items():
            layer = self._probability_layers.get(c)
            if layer is not None and layer in self._viewer.layers:
                layer.data[index] = p
                layer.refresh()
        self._done += 1
        self._scores.set_frame(
            result.frame,
            result.scores,
            result.is_reference,
            self._plan.geometry.describe(result.frame),
        )
        self._show_progress(self._done)
        self._status.value = f"{self._done} / {self._plan.total} frames done"

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
        self._worker = self._guard.worker = None
        if not self._guard.alive:
            return
        self._set_running(False)
        total = self._plan.total if self._plan is not None else 0
        if self._failed:
            self._status.value = self._failed
        elif self._stopped:
            self._status.value = f"stopped: {self._done} of {total} frames done"
        else:
            self._status.value = f"done: {self._done} frames"
