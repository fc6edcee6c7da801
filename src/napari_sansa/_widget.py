"""The SANSA dock widget: mark a few frames, press Run, the rest of the stack is labelled.

The widget is thin: it reads layers and settings on the main thread into frozen
values (:mod:`._layers`, :mod:`._widget_worker`), runs the core's generator in a
napari worker, and writes each finished frame into a Labels layer of its own
("<image> [sansa]") from the ``yielded`` signal, on the main thread.
"""

from __future__ import annotations

import os
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

from ._layers import (
    META_KEY,
    PromptError,
    fit_problem,
    image_geometry,
    is_prompt_layer,
    layer_role,
    make_plan,
    points_layer_kwargs,
    shapes_layer_kwargs,
)
from ._widget_scores import ScoreTable
from ._widget_worker import (
    CUSTOM,
    FrameResult,
    ModelCache,
    ModelSettings,
    RunOutcome,
    RunSettings,
    run_frames,
)

if TYPE_CHECKING:
    import napari

__all__ = ["SansaWidget"]

ENV_CONFIG = "NAPARI_SANSA_CONFIG"
ENV_SAM2 = "NAPARI_SANSA_SAM2_CHECKPOINT"
ENV_ADAPTER = "NAPARI_SANSA_ADAPTER_CHECKPOINT"
ENV_IMAGE_SIZE = "NAPARI_SANSA_IMAGE_SIZE"
DEFAULT_MODEL = "sansa-universal"
AUTO_CONFIG = "auto (from the checkpoint)"


def output_name(image_name: str) -> str:
    return f"{image_name} [sansa]"


def probability_name(image_name: str, label: int) -> str:
    return f"{image_name} [sansa p{label}]"


def references_name(image_name: str) -> str:
    return f"{image_name} [sansa references]"


def _transform_kwargs(layer) -> dict:
    """The image's placement in the world, for the layers made for it."""
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


def _env_path(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _path_value(widget: FileEdit) -> str | None:
    value = widget.value
    if value is None or str(value).strip() in ("", "."):
        return None
    return str(value)


class _Guard:
    """Outlives the widget's Qt side: lets late worker signals find it gone."""

    def __init__(self):
        self.alive = True
        self.worker = None


def _on_native_destroyed(guard: _Guard, *_):
    guard.alive = False
    if guard.worker is not None:
        guard.worker.quit()


class SansaWidget(Container):
    """Few-shot segmentation of an image stack with SANSA."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=True)
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
        self._model = ComboBox(label="model", choices=self._model_choices())
        self._config = ComboBox(label="config", choices=self._config_choices())
        self._sam2_file = FileEdit(
            label="SAM2 weights", mode="r", filter="*.pt *.pth", nullable=True
        )
        self._adapter_file = FileEdit(
            label="adapters",
            mode="r",
            filter="*.pt *.pth",
            nullable=True,
            tooltip="empty: plain SAM2",
        )
        self._device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"])
        self._image_size = SpinBox(
            label="model size",
            min=0,
            max=4096,
            step=32,
            value=0,
            tooltip="advanced: the model's input size; 0 = the model's own (1024)",
        )
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
        self._first = SpinBox(label="frames from", min=0, max=0)
        self._last = SpinBox(label="to", min=0, max=0)
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

        row = partial(Container, layout="horizontal", labels=False)
        self._results_box = Container(widgets=[self._use_frame], labels=False)
        self._results_box.native.layout().addWidget(self._scores)
        self.extend(
            [
                self._image,
                self._prompts,
                row(widgets=[self._new_points, self._new_shapes, self._new_labels]),
                row(widgets=[self._class_id, self._polarity], labels=True),
                Label(value="<b>Model</b>"),
                self._model,
                self._config,
                self._sam2_file,
                self._adapter_file,
                row(widgets=[self._device, self._image_size], labels=True),
                Label(value="<b>Run</b>"),
                self._mode,
                self._threshold,
                self._input_size,
                row(widgets=[self._first, self._last], labels=True),
                self._probabilities,
                row(widgets=[self._run_button, self._stop_button]),
                self._progress,
                self._status,
                Label(value="<b>Results</b>"),
                self._results_box,
                row(widgets=[self._save_folder, self._save_format], labels=True),
                self._save_button,
            ]
        )
        self._apply_environment()

        self._image.changed.connect(self._on_image_changed)
        self._model.changed.connect(self._on_model_changed)
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

        self._on_model_changed()
        self.reset_choices()
        self._on_image_changed()

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

    @staticmethod
    def _model_choices():
        import napari_sansa as ns

        choices = []
        for m in ns.list_models():
            size = f"{m['size_mb']:.0f} MB" if m.get("size_mb") else "size unknown"
            state = "on disk" if m["downloaded"] else f"download {size}"
            choices.append((f"{m['name']} ({state})", m["name"]))
        return [*choices, (CUSTOM, CUSTOM)]

    @staticmethod
    def _config_choices():
        from .core.build import CONFIGS

        configs = list(CONFIGS)
        env = os.environ.get(ENV_CONFIG, "").strip()
        if env and env not in configs:
            configs.append(env)
        return [AUTO_CONFIG, *configs]

    def _apply_environment(self) -> None:
        sam2, adapter = _env_path(ENV_SAM2), _env_path(ENV_ADAPTER)
        config = os.environ.get(ENV_CONFIG, "").strip()
        if sam2 or adapter or config:
            self._model.value = CUSTOM
            if config:
                self._config.value = config
            if sam2:
                self._sam2_file.value = sam2
            if adapter:
                self._adapter_file.value = adapter
        elif DEFAULT_MODEL in [v for _, v in self._model_choices()]:
            self._model.value = DEFAULT_MODEL
        size = os.environ.get(ENV_IMAGE_SIZE, "").strip()
        if size:
            try:
                self._image_size.value = int(size)
            except ValueError:
                show_warning(f"{ENV_IMAGE_SIZE}={size!r} is not a whole number; ignored")

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

    def _on_model_changed(self, value=None) -> None:
        custom = self._model.value == CUSTOM
        for w in (self._config, self._sam2_file, self._adapter_file):
            w.visible = custom

    @staticmethod
    def _defaults_event(layer):
        """The event a prompt layer emits when its next item's class changes."""
        from napari.layers import Labels, Points, Shapes

        if isinstance(layer, Labels):
            return layer.events.selected_label
        if isinstance(layer, (Points, Shapes)):
            return layer.events.feature_defaults
        return None

    def _on_active_layer(self, event=None) -> None:
        """Follow the active layer: show the class (and polarity) of its next item."""
        if not self._guard.alive:
            return
        old = self._watched() if self._watched is not None else None
        if old is not None:
            self._defaults_event(old).disconnect(self._pull_prompt_defaults)
        layer = self._viewer.layers.selection.active
        emitter = self._defaults_event(layer)
        self._watched = None
        if emitter is not None:
            emitter.connect(self._pull_prompt_defaults)
            self._watched = weakref.ref(layer)
        self._pull_prompt_defaults()

    def _pull_prompt_defaults(self, event=None) -> None:
        from napari.layers import Labels, Points, Shapes

        if not self._guard.alive:
            return
        layer = self._viewer.layers.selection.active
        label, positive = None, None
        if isinstance(layer, (Points, Shapes)):
            defaults = layer.feature_defaults
            if "label" in defaults.columns:
                label = defaults["label"][0]
            if isinstance(layer, Points) and "positive" in defaults.columns:
                positive = defaults["positive"][0]
        elif isinstance(layer, Labels):
            label = layer.selected_label
        with self._class_id.changed.blocked(), self._polarity.changed.blocked():
            try:
                if label is not None and int(label) >= 1:
                    self._class_id.value = int(label)
            except (TypeError, ValueError):
                pass
            if isinstance(positive, (bool, np.bool_)):
                self._polarity.value = "positive" if positive else "negative"

    def _on_prompt_defaults_changed(self, value=None) -> None:
        """Class selector and polarity toggle -> what the active layer gives its next item."""
        from napari.layers import Labels, Points, Shapes

        layer = self._viewer.layers.selection.active
        label = int(self._class_id.value)
        if isinstance(layer, Points):
            _set_feature_defaults(layer, label=label, positive=self._polarity.value == "positive")
        elif isinstance(layer, Shapes):
            _set_feature_defaults(layer, label=label)
        elif isinstance(layer, Labels):
            layer.selected_label = label

    def _on_new_points(self, value=None) -> napari.layers.Points | None:
        image = self._require_image()
        if image is None:
            return None
        kwargs = points_layer_kwargs(
            image.ndim, self._class_id.value, self._polarity.value == "positive"
        )
        layer = self._viewer.add_points(
            name=f"{image.name} [sansa points]",
            metadata={META_KEY: "points"},
            **kwargs,
            **_transform_kwargs(image),
        )
        layer.mode = "add"
        return layer

    def _on_new_shapes(self, value=None) -> napari.layers.Shapes | None:
        image = self._require_image()
        if image is None:
            return None
        layer = self._viewer.add_shapes(
            name=f"{image.name} [sansa shapes]",
            metadata={META_KEY: "shapes"},
            **shapes_layer_kwargs(image.ndim, self._class_id.value),
            **_transform_kwargs(image),
        )
        layer.mode = "add_rectangle"
        return layer

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

    def _model_settings(self) -> ModelSettings:
        device = self._device.value
        size = int(self._image_size.value) or None
        if self._model.value != CUSTOM:
            return ModelSettings(name=self._model.value, device=device, image_size=size)
        sam2 = _path_value(self._sam2_file)
        if sam2 is None:
            raise PromptError(
                "choose the SAM2 weights file (e.g. sam2_hiera_large.pt) under 'SAM2 weights', "
                f"or set {ENV_SAM2}, or pick a registered model"
            )
        config = None if self._config.value == AUTO_CONFIG else self._config.value
        return ModelSettings(
            config=config,
            sam2_checkpoint=sam2,
            adapter_checkpoint=_path_value(self._adapter_file),
            device=device,
            image_size=size,
        )

    def _run_settings(self) -> RunSettings:
        return RunSettings(
            mode=self._mode.value,
            input_size=int(self._input_size.value) or None,
            threshold=float(self._threshold.value),
            probabilities=bool(self._probabilities.value),
        )

    def _find(self, name: str, kind, shape, role: str | None = None):
        for layer in self._viewer.layers:
            if (
                layer.name == name
                and isinstance(layer, kind)
                and tuple(layer.data.shape) == tuple(shape)
                and (role is None or layer_role(layer) == role)
            ):
                return layer
        return None

    def output_layer(self, image=None) -> napari.layers.Labels | None:
        """The output Labels layer of ``image`` (by default the selected image), if any."""
        from napari.layers import Labels

        image = self._image.value if image is None else image
        if image is None:
            return None
        shape = image_geometry(image).shape
        return self._find(output_name(image.name), Labels, shape, role="output")

    def _prepare_output(self, image, plan):
        dtype = np.uint8 if max(plan.classes) < 256 else np.uint16
        layer = self.output_layer(image)
        if layer is None:
            return self._viewer.add_labels(
                np.zeros(plan.geometry.shape, dtype=dtype),
                name=output_name(image.name),
                metadata={META_KEY: "output"},
                opacity=0.6,
                **_transform_kwargs(image),
            )
        if np.iinfo(layer.data.dtype).max < max(plan.classes):
            layer.data = np.asarray(layer.data).astype(dtype)
        return layer

    def _prepare_probabilities(self, image, plan) -> dict:
        from napari.layers import Image

        layers = {}
        for c in plan.classes:
            name = probability_name(image.name, c)
            layer = self._find(name, Image, plan.geometry.shape, role="probability")
            if layer is None:
                layer = self._viewer.add_image(
                    np.zeros(plan.geometry.shape, dtype=np.float32),
                    name=name,
                    metadata={META_KEY: "probability"},
                    colormap="inferno",
                    contrast_limits=(0.0, 1.0),
                    blending="additive",
                    opacity=0.7,
                    **_transform_kwargs(image),
                )
            layers[c] = layer
        return layers

    def _references_layer(self, image, dtype):
        """The image's "[sansa references]" Labels layer, made if there is none."""
        from napari.layers import Labels

        geometry = image_geometry(image)
        name = references_name(image.name)
        layer = self._find(name, Labels, geometry.shape)
        if layer is None:
            layer = self._viewer.add_labels(
                np.zeros(geometry.shape, dtype=dtype),
                name=name,
                metadata={META_KEY: "references"},
                **_transform_kwargs(image),
            )
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
            model_settings = self._model_settings()
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
        self._output = self._prepare_output(image, plan)
        self._probability_layers = (
            self._prepare_probabilities(image, plan) if settings.probabilities else {}
        )
        self._plan = plan
        self._done, self._stopped, self._failed = 0, False, None
        self._scores.clear_rows()
        self._progress.max, self._progress.value = plan.total, 0
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
        from ._writer import write_frames

        image = self._require_image()
        output = self.output_layer(image) if image is not None else None
        if output is None:
            if image is not None:
                self._fail("there is nothing to save yet: run SANSA first")
            return []
        folder = folder if folder is not None else _path_value(self._save_folder)
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
        self._progress.value = self._done
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


def _set_feature_defaults(layer, **values) -> None:
    """Set what the layer gives its next item, adding missing feature columns (with
    the values that the prompts take when the column is absent: class 1, positive)."""
    import pandas as pd

    features = layer.features
    missing = {k: v for k, v in values.items() if k not in features.columns}
    if missing:
        implicit = {"label": 1, "positive": True}
        features = features.copy()
        for k, v in missing.items():
            dtype = bool if isinstance(v, bool) else "int64"
            features[k] = pd.Series([implicit.get(k, v)] * len(features), dtype=dtype)
        layer.features = features
    defaults = {c: layer.feature_defaults[c][0] for c in layer.features.columns}
    defaults.update(values)
    layer.feature_defaults = defaults
