"""The SANSA dock widget: mark a few frames, press Run, the rest of the stack is labelled.

Only layout and wiring: the controls are public attributes (``widget.image``,
``widget.prompt_layers``, ``widget.run_button``, ``widget.model_panel.device``, ...),
and every action goes to the widget's :class:`~napari_sansa.napari.session.SansaSession`
(``widget.session``), which reads the layers, runs the worker, writes the output
layer, keeps hand edits and saves. The widget shows what the session reports.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)

from napari_sansa.napari._qt.axes_panel import AxesPanel
from napari_sansa.napari._qt.folder_panel import FolderPanel
from napari_sansa.napari._qt.layout import (
    beside,
    elided,
    fit_rows,
    fixed_message,
    page,
    paged,
    row,
    section,
    show_page,
    tight,
)
from napari_sansa.napari._qt.model_panel import ModelPanel, path_value
from napari_sansa.napari._qt.navigation import FrameNavigation
from napari_sansa.napari._qt.objects_panel import ObjectCounts, TilesObjectsPanel
from napari_sansa.napari._qt.preview_panel import PreviewPanel
from napari_sansa.napari._qt.prompt_inputs import PromptInputs, check_boxes
from napari_sansa.napari._qt.scores import ConfidencePlot, ScoreTable, sort_value
from napari_sansa.napari._qt.shortcuts import register_shortcuts
from napari_sansa.napari._qt.tracks_panel import TracksPanel
from napari_sansa.napari._qt.training_panel import TrainingPanel
from napari_sansa.napari._qt.workers import create_worker
from napari_sansa.napari.messages import gui_message, option_name
from napari_sansa.napari.session import (
    ALREADY_RUNNING,
    EDITED_ACTION,
    FrameReport,
    SansaSession,
)
from napari_sansa.napari.settings_store import RESET_TIP, WidgetSettings
from napari_sansa.napari.worker import RunSettings

if TYPE_CHECKING:
    import napari

__all__ = ["SansaWidget", "warm_up_in_background"]

#: the button that takes the frame shown as a reference
USE_FRAME_ACTION = "Use frame"
#: the status before anything ran
READY = "ready: mark a few frames of the image, then press Run"
#: what "Use frame" takes from the frame
TAKE_CHOICES = [
    ("edited classes", "edited"),
    ("class above", "class"),
    ("all classes", "all"),
]


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


class SansaWidget(FrameNavigation, PromptInputs, Container):
    """Few-shot segmentation of an image stack with SANSA."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()  # napari docks .native: a magicgui scroll area would be dropped
        self.viewer = viewer
        self.session = SansaSession(viewer, create_worker=create_worker)
        self._build_prompt_inputs()
        self.model_panel = ModelPanel()
        self._build_run_controls()
        self._build_review()
        self.large = TilesObjectsPanel()  # tiles and objects: _qt/objects_panel.py
        self.folder = FolderPanel(viewer, self.session.models)  # _qt/folder_panel.py
        self.save_folder = FileEdit(label="save to", mode="d", nullable=True)
        self.save_format = ComboBox(label="format", choices=["tif", "png"])
        self.save_button = PushButton(text="Save frames", tooltip="one file per frame")
        self.save_tracks_button = PushButton(
            text="Save tracks",
            tooltip="the last run's tracks: '<image> tracks.tif' (track ids), tracks.csv (one "
            "row per track and frame) and ctc/ (the Cell Tracking Challenge format)",
        )
        # -- fine-tuning: napari/_qt/training_panel.py (Stop, progress, status: the footer's)
        self.training_panel = TrainingPanel(
            viewer, self.session, lambda: self.image.value, self.model_panel.settings,
            lambda: self.run_settings().segment, footer=self,
        )  # fmt: skip
        self.axes = AxesPanel(on_change=self._on_images_changed)
        self.session.names = self.folder.run.names = self.control_name  # errors' words
        self.as_channels = CheckBox(
            text="as RGB channels",
            value=False,
            tooltip="the image and the images under 'with images' (2 or 3 gray layers of one "
            "shape, as napari splits a multichannel image) are its red, green and blue "
            "channels; the output is the first one's",
        )
        self._lay_out()
        self.preview_panel = PreviewPanel(self)  # the preview switch, fix clicks: preview_panel.py
        self._connect()
        self.folder.connect(self)
        self.reset_choices()
        self._on_image_changed()
        self.training_panel.reset_choices()
        self.show_first_reference()
        self._show_model()
        self.shortcuts = register_shortcuts(self)  # napari's keybindings: _qt/shortcuts.py
        self.settings_store = WidgetSettings(self)  # remembered: napari/settings_store.py
        self.warmup = warm_up_in_background()

    def _build_run_controls(self) -> None:
        self.mode = ComboBox(
            label="mode",
            choices=["independent", "sequential"],
            tooltip="independent: each frame sees only the references; sequential: frames "
            "in order, each also sees the previous ones (time-lapses, z-stacks)",
        )
        self.threshold = FloatSpinBox(
            label="threshold", min=0.0, max=1.0, step=0.05, value=0.5,
            tooltip="a pixel belongs to a class when SANSA's probability is above this",
        )  # fmt: skip
        self.input_size = ComboBox(
            label="resize first",
            choices=[("640 px (authors)", 640), ("no", 0)],
            value=640,
            tooltip="the authors resize every image to 640 px before the model's own resize; "
            "'no' goes straight to the model's size",
        )
        self.probabilities = CheckBox(
            text="probability maps", value=False, tooltip="one float layer per class, 0..1"
        )
        # one Run, Stop, progress bar and status for a run, a folder run and fine-tuning
        self.run_button = PushButton(
            text="Run",
            tooltip="label every frame without prompts (within the frame ranges) from the "
            "frames marked in the ticked prompt layers, with the model on the line below; "
            "with 'a folder on disk' ticked: every image of the folder",
        )
        self.stop_button = PushButton(
            text="Stop",
            enabled=False,
            tooltip="stop what is running: a run or folder run (what is done is kept) or "
            "fine-tuning (after its current step; the best state so far is kept)",
        )
        self.progress = ProgressBar(min=0, max=1, value=0, label="progress")
        self.model_line = Label(value="")
        self.status = Label(value="")
        fixed_message(self.status)

    def _build_review(self) -> None:
        self.take = ComboBox(
            label="'Use frame' takes",
            choices=TAKE_CHOICES,
            value="edited",
            tooltip="what 'Use frame' copies into the references layer: the classes "
            "you edited on it, the class chosen on the main page, or all classes",
        )
        self.use_frame_button = PushButton(
            text=USE_FRAME_ACTION,
            tooltip="use the frame shown as a reference: copy the classes chosen under "
            "'Options: take' of the shown frame of the output (after fixing it) into the "
            "references layer; the next run uses them",
        )
        self.edited_button = PushButton(
            text=EDITED_ACTION,
            tooltip="use the edited frames as references: every frame you changed by hand "
            "since SANSA wrote it (runs keep them as they are); its edited classes become "
            "references",
        )
        self.scores = ScoreTable()
        self.plot = ConfidencePlot()
        self.object_counts = ObjectCounts()
        self.object_counts.setVisible(False)  # shown by a run with objects
        self.tracks_panel = TracksPanel(self)  # shown by a run with tracks: _qt/tracks_panel.py

    def _lay_out(self) -> None:
        check_boxes(self.prompt_layers)  # which layers the next run uses: ticked
        fit_rows(self.prompt_layers)  # as tall as its rows, up to 3 (58 px, as before)
        self.other_images.native.setMaximumHeight(42)
        #: the main page's place for more prompt controls (e.g. a preview switch)
        self.main_extras = section()
        beside(self.image, self.mode, self.axes.level)
        images = section(
            self.image, self.other_images, self.as_channels, *self.axes.widgets,
            self.prompt_layers,
            tight(row(self.new_points_button, self.new_shapes_button, self.new_labels_button)),
            row(self.class_id, self.polarity), self.main_extras,
            self.mode, self.axes.sequential_axis, self.axes.ranges.box,
        )  # fmt: skip
        # the main page fits napari's default window also after a run on an image set
        # (its 'with images' list and the confidence plot shown): its rows 2 px apart,
        # as the page's own parts and the rows of buttons
        for part in (images, self.main_extras):
            part.native.layout().setSpacing(2)
        self.scores.setMinimumHeight(46)
        review = (self.plot, self.scores, self.object_counts)
        take = tight(row(self.use_frame_button, self.edited_button))  # one row: the page fits
        main = page(images, *review, take, stretch=False)
        main.layout().setStretchFactor(self.scores, 1)
        self.advanced = section(
            self.threshold, self.input_size, self.probabilities, self.take,
            *self.large.widgets, *self.model_panel.advanced,
        )  # fmt: skip
        self.sections = {
            "Images and prompts": images,
            "Model": section(*self.model_panel.widgets),
            "Options": self.advanced,
            "Folder": self.folder.section,
            "Fine-tune": section(*self.training_panel.widgets),
            "Save": section(
                self.save_folder, self.save_format, self.save_button, self.save_tracks_button
            ),
        }
        reset = PushButton(text="Reset to defaults", tooltip=RESET_TIP)
        reset.changed.connect(lambda _=None: self.settings_store.reset())
        self.reset_button = reset
        pages = {"Label": main, "Model": page(self.sections["Model"])}
        pages["Options"] = page(self.advanced, reset)
        for title in ("Folder", "Fine-tune", "Save"):
            pages[title] = page(self.sections[title])
        pages["Tracks"] = self.tracks_panel.page()
        self.progress.native.setFormat("")  # "%v / %m" once something runs
        self.progress.native.setToolTip("frames (or fine-tuning steps) done")
        buttons = row(self.run_button, self.stop_button, self.progress)
        buttons.native.layout().setStretch(2, 1)  # Run and Stop as wide as their words
        for button in (self.run_button, self.stop_button):
            button.native.setMinimumWidth(button.native.sizeHint().width())
        self.footer = section(buttons, self.model_line, self.status)
        paged(self, pages, self.footer)
        for combo in (self.axes.channel_axis, self.axes.channels):  # side by side: narrower
            combo.native.setMinimumWidth(40)
        self.page_buttons["Tracks"].setVisible(False)  # shown by a run with tracks
        elided(self.model_line)
        self.status.value = READY

    def _on_images_changed(self, value=None) -> None:
        super()._on_images_changed(value)
        self.large.set_image(self.image.value)  # 'tracks' only for a time-lapse

    def show_page(self, title: str) -> None:
        """Turn to a page: 'Label', 'Model', 'Options', 'Folder', 'Fine-tune', 'Save',
        'Tracks' (after a run with tracks)."""
        show_page(self, title)

    def _connect(self) -> None:
        self.image.changed.connect(self._on_image_changed)
        self.other_images.changed.connect(self._on_images_changed)
        self.as_channels.changed.connect(self._on_images_changed)
        self.class_id.changed.connect(self._on_prompt_defaults_changed)
        self.polarity.changed.connect(self._on_prompt_defaults_changed)
        self.new_points_button.changed.connect(self.new_points_layer)
        self.new_shapes_button.changed.connect(self.new_shapes_layer)
        self.new_labels_button.changed.connect(self.new_labels_layer)
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        self.use_frame_button.changed.connect(self.use_current_frame_as_reference)
        self.edited_button.changed.connect(self.use_edited_frames_as_references)
        self.save_button.changed.connect(self.save_frames)
        self.save_tracks_button.changed.connect(self.save_tracks)
        self.scores.frame_clicked.connect(self.go_to_frame)
        self.object_counts.frame_clicked.connect(self.go_to_frame)
        self.plot.frame_clicked.connect(self.go_to_frame)
        session = self.session
        session.status.connect(self._show_status)
        session.frame_written.connect(self._on_frame_written)
        session.running.connect(self._on_running)
        training = self.training_panel.training
        training.status.connect(self._show_status)
        training.running.connect(self._on_training)
        training.model_changed.connect(self._show_model)
        panel = self.model_panel
        for w in (panel.model, panel.sam2_file, panel.adapter_file, panel.config):
            w.changed.connect(self._show_model)
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved, layers.renamed):
            event.connect(self.reset_choices)
        layers.inserted.connect(self._on_inserted)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        # the session outlives the Qt side: late worker signals find it closed
        self.native.destroyed.connect(session.close)
        self.native.destroyed.connect(self.training_panel.training.close)
        for event in (layers.inserted, layers.removed, layers.renamed):
            event.connect(self.training_panel.reset_choices)
        self.image.changed.connect(self.training_panel.reset_choices)

    # -- public actions -----------------------------------------------------------------
    @property
    def worker(self):
        """The running worker (a run or a folder run), or None."""
        return self.session.worker or self.folder.run.worker

    @property
    def first_frame(self):
        """The first frame to label (on a stack with several frame axes: of the first
        axis; every axis's range is in ``widget.axes.ranges``)."""
        return self.axes.ranges.first

    @property
    def last_frame(self):
        return self.axes.ranges.last

    def run_settings(self) -> RunSettings:
        """The run settings shown, as a frozen value."""
        return RunSettings.make(
            mode=self.mode.value,
            input_size=int(self.input_size.value) or None,
            threshold=float(self.threshold.value),
            probabilities=bool(self.probabilities.value),
            sequential_axis=self.axes.sequential_axis.value,
            **self.large.settings(),
        )

    def control_name(self, option: str) -> str:
        """How the widget calls a run option (its control's label): errors about options
        are worded with it."""
        for panel in (self, self.large, self.axes):
            label = getattr(getattr(panel, option, None), "label", None)
            if isinstance(label, str) and label:
                return f"'{label}'"
        return option_name(option)

    def run(self, value=None):
        """Label the frames without prompts; returns the (started) worker, or None
        when the inputs cannot be used (the reason is shown as a notification)."""
        if self.session.busy():
            self.session.notify(ALREADY_RUNNING)
            return self.session.worker
        training = self.training_panel.training
        if training.busy():
            self.session.fail("fine-tuning is running: wait for it (or press Stop), then Run")
            return None
        try:
            model_settings = training.model_source(self.model_panel.settings())
            settings = self.run_settings()
        except ValueError as exc:
            self.session.fail(gui_message(exc, names=self.control_name)[0])
            return None
        images = self.images()
        if self.folder.active or self.folder.run.busy():  # a folder on disk: folder_panel.py
            return self.folder.start(images, self.prompt_layers.value, model_settings, settings)
        return self.session.run(
            images if len(images) > 1 else self.image.value,
            list(self.prompt_layers.value),
            model_settings,
            settings,
            self.axes.ranges.value(),
            as_channels=bool(self.as_channels.value) and len(images) > 1,
        )

    def stop(self, value=None) -> None:
        """Stop whatever is running: a run (frames done so far stay, nothing more is
        written), a folder run, or fine-tuning (after its current step)."""
        self.session.stop()
        self.folder.run.stop()
        self.training_panel.training.stop()
        self.stop_button.enabled = False

    def step_class(self, step: int = 1) -> int:
        """The next (``step`` 1) or previous (-1) class for the next prompt."""
        self.class_id.value = min(max(int(self.class_id.value) + step, 1), self.class_id.max)
        return int(self.class_id.value)

    def go_to_next_uncertain(self):
        """Show the next least certain labelled frame of the last run (lowest score
        first, after the one shown last); returns its key, or None."""
        order = sorted(
            (low, sort_value(key), key)
            for key, (low, kind) in self.plot._values.items()
            if kind == "predicted"
        )
        keys = [key for *_, key in order]
        if not keys:
            self.session.notify("no labelled frames yet: press Run first", popup=False)
            return None
        last = getattr(self, "_last_uncertain", None)
        key = keys[(keys.index(last) + 1) % len(keys)] if last in keys else keys[0]
        self._last_uncertain = key
        self.go_to_frame(key)
        self.scores.select_frame(key)
        return key

    def select_folder(self, input_folder, output_folder) -> None:
        """Label a folder on disk: Run then labels every image of ``input_folder`` into
        ``output_folder`` from the prompts shown (see napari/folder.py)."""
        self.folder.select(input_folder, output_folder)

    def output_layer(self, image=None) -> napari.layers.Labels | None:
        """The output Labels layer of ``image`` (by default the selected image), if any."""
        return self.session.output_layer(self.image.value if image is None else image)

    def edited_frames(self, image=None) -> list[int]:
        """Frames of the output changed by hand since SANSA wrote them (runs keep them)."""
        return self.session.edited_frames(self.image.value if image is None else image)

    def use_current_frame_as_reference(self, value=None, *, classes=None, replace=False):
        """Copy classes of the shown frame of the output layer into the image's references
        layer (made if needed); the next run uses them as references. Returns that layer,
        or None. ``classes``: class ids (default: as chosen under 'take': the edited
        classes, the class above, or all); a reference already on the frame is changed
        only with ``replace``."""
        image = self._require_image()
        if image is None:
            return None
        frame = self.current_frame(image)
        if classes is None:
            classes = {"edited": None, "class": (int(self.class_id.value),), "all": "all"}[
                self.take.value
            ]
        refs = self.session.promote(image, frame, classes, replace=replace)
        if refs is not None:
            self._choose_prompt_layer(refs)
        return refs

    def use_edited_frames_as_references(self, value=None) -> list[int]:
        """Every frame edited by hand since SANSA wrote it: its edited classes become
        references. Returns the frames taken."""
        image = self._require_image()
        if image is None:
            return []
        taken = self.session.promote_edited(image)
        if taken:
            self._choose_prompt_layer(self.viewer.layers[self._references_name(image)])
        return taken

    @staticmethod
    def _references_name(image) -> str:
        from napari_sansa.napari.outputs import references_name

        return references_name(image.name)

    def save_frames(self, value=None, *, folder=None, fmt=None) -> list[str]:
        """Write the output layer as one file per frame; returns the paths."""
        image = self._require_image()
        if image is None:
            return []
        folder = folder if folder is not None else path_value(self.save_folder)
        return self.session.save_frames(image, folder, fmt or self.save_format.value)

    def save_tracks(self, value=None, *, folder=None) -> list[str]:
        """Write the last run's tracks (labels, tracks.csv, CTC files); returns the paths."""
        folder = folder if folder is not None else path_value(self.save_folder)
        return self.session.save_tracks(folder)

    # -- what the session reports -------------------------------------------------------
    def _show_status(self, message: str) -> None:
        """The one status line of runs, folder runs and fine-tuning: the last message
        (wrapped; whole in its tooltip, with a failure's details)."""
        self.status.value = message
        details = self.session.details
        if details and message == self.session.message and details != message:
            self.status.tooltip = details  # details on demand: hover over the message
        else:
            self.status.tooltip = message

    def _show_model(self, *_) -> None:
        """The line under Run: which model runs use (tuned or not)."""
        from napari_sansa.napari._qt.model_panel import model_line

        training = self.training_panel.training
        text = model_line(self.model_panel)
        if training.using == "tuned" and training.tuned is not None:  # said first: it fits
            run = training.tuned.label.removeprefix("tuned ")
            text = text.replace("model: ", f"model: tuned ({run}) from ", 1)
        self.model_line.native.setProperty("full", text)
        self.model_line.native.refresh_elided()

    def _on_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.stop_button.enabled = running
        if running:
            self.scores.clear_rows()
            self.object_counts.clear_rows()
            self.object_counts.setVisible(False)
            self.plot.clear()
            self.progress.max = self.session.plan.total
            self._show_progress(0)

    def _on_training(self, running: bool) -> None:
        self.run_button.enabled = not running  # the panel shows Stop and the steps
        self.progress.native.setFormat("%v / %m")
        self._show_model()

    def _show_progress(self, done: int) -> None:
        # QProgressBar.setValue repaints at once (synchronously), which costs a whole
        # window repaint per frame (0.1 s on Xvfb/Mesa); with updates off it only
        # schedules a repaint, drawn with the canvas in the next event loop turn
        bar = self.progress.native
        bar.setFormat("%v / %m")
        bar.setUpdatesEnabled(False)
        self.progress.value = done
        bar.setUpdatesEnabled(True)

    def _on_frame_written(self, report: FrameReport) -> None:
        self.scores.set_frame(report.key, report.scores, report.kind, report.label)
        self.plot.set_frame(report.key, report.scores, report.kind, report.label)
        if report.counts is not None:
            self.object_counts.setVisible(True)
            self.object_counts.set_frame(report.key, report.counts)
            self.plot.set_count(report.key, sum(report.counts.values()))
        self._show_progress(self.session.done)
