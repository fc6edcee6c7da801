"""The widget's model panel: which SANSA to load, read into a frozen ModelSource.

Registered models (``napari_sansa.list_models``) or "custom files" (SAM2 config,
SAM2 weights, adapter weights). ``NAPARI_SANSA_CONFIG``,
``NAPARI_SANSA_SAM2_CHECKPOINT`` and ``NAPARI_SANSA_ADAPTER_CHECKPOINT`` preset
"custom files"; ``NAPARI_SANSA_IMAGE_SIZE`` presets the model's input size.
"""

from __future__ import annotations

import os

from magicgui.widgets import ComboBox, FileEdit, Label, SpinBox
from napari.utils.notifications import show_warning

from napari_sansa.core.models.source import ModelSource
from napari_sansa.napari.geometry import PromptError
from napari_sansa.napari.worker import CUSTOM

__all__ = ["ModelPanel", "model_description", "model_line", "path_value"]

ENV_CONFIG = "NAPARI_SANSA_CONFIG"
ENV_SAM2 = "NAPARI_SANSA_SAM2_CHECKPOINT"
ENV_ADAPTER = "NAPARI_SANSA_ADAPTER_CHECKPOINT"
ENV_IMAGE_SIZE = "NAPARI_SANSA_IMAGE_SIZE"
DEFAULT_MODEL = "sansa-universal"
AUTO_CONFIG = "read from the weights file"
DEVICES = ("auto", "cpu", "cuda", "mps")


def _env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


def path_value(widget: FileEdit) -> str | None:
    """A FileEdit's path, or None when it is empty."""
    value = widget.value
    if value is None or str(value).strip() in ("", "."):
        return None
    return str(value)


def model_choices() -> list[tuple[str, str]]:
    import napari_sansa as ns

    choices = [(m["name"], m["name"]) for m in ns.list_models()]
    return [*choices, (CUSTOM, CUSTOM)]


def model_description(name: str) -> str:
    """What a model was trained for, its prompts, its size, whether it is on disk and
    what is known about its files' terms of use."""
    import napari_sansa as ns

    if name == CUSTOM:
        return "your own SAM2 weights and (optionally) SANSA adapter files"
    for m in ns.list_models():
        if m["name"] == name:
            size = f"{m['size_mb']:.0f} MB" if m.get("size_mb") else "size unknown"
            state = "Downloaded" if m["downloaded"] else f"Downloads {size} on first run"
            return f"{m['description']}. Prompts: {m['prompts']}. {state}. Terms: {m['terms']}."
    return ""


def config_choices() -> list[str]:
    from napari_sansa.core.models.build import CONFIGS  # a plain dict; importing it loads no torch

    configs = list(CONFIGS)
    env = _env(ENV_CONFIG)
    if env and env not in configs:
        configs.append(env)
    return [AUTO_CONFIG, *configs]


class ModelPanel:
    """Model, custom files (shown only for "custom files"), device, input size, threads.

    Holds the child widgets (public attributes, and ``widgets`` in their order, laid
    out by the dock widget so that their labels line up with its own) and reads them
    into a ModelSource.
    """

    def __init__(self):
        self.model = ComboBox(label="model", choices=model_choices())
        # long model names must not widen the dock
        self.model.native.setSizeAdjustPolicy(
            self.model.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model.native.setMinimumContentsLength(12)
        self.model.tooltip = "which SANSA (or plain SAM2) to run; described below"
        self.description = Label(value="")
        self.description.native.setWordWrap(True)
        self.config = ComboBox(label="config", choices=config_choices())
        self.sam2_file = FileEdit(
            label="SAM2 weights", mode="r", filter="*.pt *.pth", nullable=True
        )
        self.adapter_file = FileEdit(
            label="adapters",
            mode="r",
            filter="*.pt *.pth",
            nullable=True,
            tooltip="empty: plain SAM2",
        )
        self.config.tooltip = "the SAM2 architecture of the custom weights"
        self.device = ComboBox(
            label="device",
            choices=list(DEVICES),
            tooltip="auto: a GPU (CUDA or Apple) when there is one, else the CPU",
        )
        self.image_size = SpinBox(
            label="model input (px)",
            min=0,
            max=4096,
            step=32,
            value=0,
            tooltip="the square size the model sees; the model's own (1024) unless its "
            "weights were made for another",
        )
        self.image_size.native.setSpecialValueText("the model's own")
        self.threads = SpinBox(
            label="CPU threads",
            min=0,
            max=max(256, os.cpu_count() or 1),
            value=0,
            tooltip="CPU threads a run keeps busy; automatic: the cores this process may use "
            "now, one left to napari (more than the cores only makes it slower)",
        )
        self.threads.native.setSpecialValueText("automatic")
        #: the main panel: the choice, its description and the custom files
        self.widgets = [
            self.model,
            self.description,
            self.config,
            self.sam2_file,
            self.adapter_file,
        ]
        #: rarely changed: under 'advanced'
        self.advanced = [self.device, self.image_size, self.threads]
        self._apply_environment()
        self.model.changed.connect(self._on_model_changed)
        self._on_model_changed()

    def _apply_environment(self) -> None:
        sam2, adapter, config = _env(ENV_SAM2), _env(ENV_ADAPTER), _env(ENV_CONFIG)
        if sam2 or adapter or config:
            self.model.value = CUSTOM
            if config:
                self.config.value = config
            if sam2:
                self.sam2_file.value = sam2
            if adapter:
                self.adapter_file.value = adapter
        elif DEFAULT_MODEL in self.model.choices:
            self.model.value = DEFAULT_MODEL
        size = _env(ENV_IMAGE_SIZE)
        if size:
            try:
                self.image_size.value = int(size)
            except ValueError:
                show_warning(f"{ENV_IMAGE_SIZE}={size!r} is not a whole number; ignored")

    def _on_model_changed(self, value=None) -> None:
        custom = self.model.value == CUSTOM
        for w in (self.config, self.sam2_file, self.adapter_file):
            w.visible = custom
        self.description.value = model_description(self.model.value)
        self.description.tooltip = self.description.value

    def settings(self) -> ModelSource:
        """The chosen model as a frozen value; raises PromptError if files are missing."""
        device = self.device.value
        size = int(self.image_size.value) or None
        threads = int(self.threads.value) or None
        if self.model.value != CUSTOM:
            return ModelSource(
                name=self.model.value, device=device, image_size=size, threads=threads
            )
        sam2 = path_value(self.sam2_file)
        if sam2 is None:
            raise PromptError(
                "choose the SAM2 weights file (e.g. sam2_hiera_large.pt) under 'SAM2 weights', "
                f"or set {ENV_SAM2}, or pick a registered model"
            )
        config = None if self.config.value == AUTO_CONFIG else self.config.value
        return ModelSource(
            config=config,
            sam2_checkpoint=sam2,
            adapter_checkpoint=path_value(self.adapter_file),
            device=device,
            image_size=size,
            threads=threads,
        )


def model_line(panel: ModelPanel) -> str:
    """The model chosen in ``panel``, in a few words: its name, or the custom files."""
    from pathlib import Path

    if panel.model.value != CUSTOM:
        return f"model: {panel.model.value}"
    sam2, adapters = path_value(panel.sam2_file), path_value(panel.adapter_file)
    if sam2 is None:
        return "model: custom files (choose the SAM2 weights on 'Model')"
    if adapters is None:
        return f"model: plain SAM2, {Path(sam2).name}"
    return f"model: {Path(adapters).name}, on {Path(sam2).name}"
