"""The widget's fine-tuning section: frames, steps, Start/Stop, the loss curve, the models.

Layout and wiring only; the work is :class:`~napari_sansa.napari.training.TrainingSession`
(``panel.training``). The controls are public attributes (``panel.annotations``,
``panel.frames``, ``panel.steps``, ``panel.validation``, ``panel.start_button``,
``panel.stop_button``, ``panel.use_model``, ``panel.save_button``, ``panel.curve``) and
``panel.widgets`` lists them in order, for the dock widget to lay out.
"""

from __future__ import annotations

import math

from magicgui.widgets import ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QFileDialog, QSizePolicy, QWidget

from napari_sansa.napari._qt.layout import row
from napari_sansa.napari.geometry import PromptError, image_geometry
from napari_sansa.napari.training import TrainingSession, TrainingSettings
from napari_sansa.napari.training_frames import (
    annotated_frames,
    default_layer,
    is_annotation_layer,
    parse_frames,
)

__all__ = ["LossCurve", "TrainingPanel"]

TRAIN_COLOR = QColor(80, 160, 255)
VAL_COLOR = QColor(255, 150, 40)
MODEL_CHOICES = [("the loaded model", "original"), ("the tuned model", "tuned")]


class LossCurve(QWidget):
    """Training loss per step (a line) and validation loss (dots joined), drawn as they come."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.train: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.steps = 1
        self.best_step: int | None = None
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("fine-tuning loss: training (blue) per step, validation (orange)")

    def clear(self, steps: int = 1) -> None:
        self.train, self.validation, self.steps, self.best_step = [], [], max(1, steps), None
        self.update()

    def add(self, stats) -> None:
        """One ``StepStats``."""
        self.steps = max(1, int(stats.steps))
        if stats.loss is not None and math.isfinite(stats.loss):
            self.train.append((int(stats.step), float(stats.loss)))
        if stats.val_loss is not None and math.isfinite(stats.val_loss):
            self.validation.append((int(stats.step), float(stats.val_loss)))
            self.best_step = int(stats.best_step)
        self.update()

    def _range(self) -> tuple[float, float]:
        values = [v for _, v in self.train] + [v for _, v in self.validation]
        if not values:
            return 0.0, 1.0
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 1e-3)
        return max(0.0, lo - pad), hi + pad

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(pal.ColorRole.WindowText)
        font = p.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("0.000") + 8, 8, fm.height() + 4, 18
        plot = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        p.fillRect(plot, pal.color(pal.ColorRole.Base))
        grid = QColor(text)
        grid.setAlpha(60)
        p.setPen(QPen(grid, 1))
        p.drawRect(plot)
        lo, hi = self._range()

        def at(step, value):
            x = plot.left() + plot.width() * step / self.steps
            y = plot.bottom() - plot.height() * (value - lo) / (hi - lo)
            return QPointF(x, y)

        p.setPen(text)
        p.drawText(QRectF(0, plot.top() - fm.height() / 2, left - 4, fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"{hi:.3f}")  # fmt: skip
        p.drawText(QRectF(0, plot.bottom() - fm.height() / 2, left - 4, fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"{lo:.3f}")  # fmt: skip
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, 60, fm.height()),
                   Qt.AlignmentFlag.AlignLeft, "0")  # fmt: skip
        p.drawText(QRectF(plot.right() - 120, plot.bottom() + 2, 120, fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"step {self.steps}")  # fmt: skip
        if self.best_step is not None and self.validation:
            dash = QPen(VAL_COLOR, 1, Qt.PenStyle.DashLine)
            p.setPen(dash)
            x = at(self.best_step, lo).x()
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        # validation first: the training line stays visible where the two agree
        for points, color, dots in ((self.validation, VAL_COLOR, True),
                                    (self.train, TRAIN_COLOR, False)):  # fmt: skip
            if not points:
                continue
            path = QPainterPath(at(*points[0]))
            for s, v in points[1:]:
                path.lineTo(at(s, v))
            p.setPen(QPen(color, 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            if dots or len(points) == 1:
                p.setBrush(color)
                for s, v in points:
                    p.drawEllipse(at(s, v), 2.5, 2.5)
        x = 4.0  # from the left edge: the legend fits a narrow dock
        for name, color in (("training", TRAIN_COLOR), ("validation", VAL_COLOR)):
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, top / 2), QPointF(x + 12, top / 2))
            p.setPen(text)
            p.drawText(QPointF(x + 16, top / 2 + fm.ascent() / 2 - 1), name)
            x += 16 + fm.horizontalAdvance(name) + 14
        p.end()


class TrainingPanel:
    """The fine-tuning controls of the SANSA widget."""

    def __init__(self, viewer, session, image, model_source, run_options, footer=None):
        """``image``, ``model_source``, ``run_options``: callables giving the widget's
        chosen image layer, ModelSource and run options (tuned as the runs go); ``footer``:
        a widget whose ``stop_button``, ``progress`` and ``status`` show the fine-tuning too
        (one Stop, one progress bar and one status for everything), else the panel has its own."""
        self.viewer = viewer
        self.training = TrainingSession(session)
        self._image, self._model_source, self._run_options = image, model_source, run_options
        self.annotations = ComboBox(
            label="annotations",
            choices=self._layer_choices,
            tooltip="the Labels layer whose painted frames are complete annotations (by "
            "default the image's references layer: painted frames and corrected frames "
            "taken as references)",
        )
        self.frames = LineEdit(label="train on", value="")
        self.frames.native.setPlaceholderText("every annotated frame")
        self.frames.tooltip = "frame numbers, e.g. 0, 3, 5-7; empty: every annotated frame"
        self.found = Label(value="")
        self.steps = SpinBox(label="steps", min=1, max=100_000, value=500,
                             tooltip="optimisation steps (the authors' default: 500)")  # fmt: skip
        self.validation = SpinBox(
            label="validation frames",
            min=0,
            max=1000,
            value=1,
            tooltip="annotated frames held out to check the tuned adapters: they are kept "
            "only if their IoU on these frames beats the loaded ones' (0: none, unchecked; a "
            "frame is held out only if every class keeps two others)",
        )
        self.start_button = PushButton(
            text="Fine-tune", tooltip="start fine-tuning the adapters on the annotated frames"
        )
        if footer is None:
            self.stop_button = PushButton(text="Stop", enabled=False)
            self.progress = ProgressBar(min=0, max=1, value=0, label="steps done")
            self.status = Label(value="")
            self.status.native.setWordWrap(True)
        else:
            self.stop_button, self.progress = footer.stop_button, footer.progress
            self.status = footer.status
        self.curve = LossCurve()
        self.use_model = ComboBox(label="use", choices=MODEL_CHOICES, value="original",
                                  enabled=False)  # fmt: skip
        self.save_button = PushButton(text="Save adapters...", enabled=False)
        holder = Container(labels=False)
        holder.margins = (0, 0, 0, 0)
        holder.native.layout().addWidget(self.curve)
        self.widgets = [
            self.annotations, self.frames, self.found, self.steps, self.validation,
            self.start_button, holder, self.use_model, self.save_button,
        ]  # fmt: skip
        if footer is None:
            self.widgets[5:6] = [row(self.start_button, self.stop_button), self.progress]
            self.widgets.append(self.status)
            self.stop_button.changed.connect(self.stop)
        self.start_button.changed.connect(self.start)
        self.save_button.changed.connect(self._on_save_clicked)
        self.use_model.changed.connect(self._on_use_changed)
        self.annotations.changed.connect(self.show_found)
        t = self.training
        if footer is None:  # else the footer's owner shows the status
            t.status.connect(self._show_status)
        t.step.connect(self._on_step)
        t.running.connect(self._on_running)
        t.model_changed.connect(self._on_model_changed)

    # -- choices ---------------------------------------------------------------------------
    def _layer_choices(self, widget=None):
        image = self._image()
        if image is None:
            return []
        try:
            geometry = image_geometry(image)
        except PromptError:
            return []
        return [(layer.name, layer) for layer in self.viewer.layers
                if is_annotation_layer(layer, geometry)]  # fmt: skip

    def reset_choices(self, *_) -> None:
        """Follow the layers: the image's references layer is chosen when it appears."""
        before = self.annotations.value
        self.annotations.reset_choices()
        image = self._image()
        refs = default_layer(self.viewer, image) if image is not None else None
        if refs is not None and (before is None or before not in self.viewer.layers):
            self.annotations.value = refs
        self.show_found()

    def show_found(self, value=None) -> list[int]:
        """Show (and return) the annotated frames of the chosen layer."""
        layer, image = self.annotations.value, self._image()
        if layer is None or image is None or layer not in self.viewer.layers:
            self.found.value = "no annotations layer"
            return []
        frames = annotated_frames(layer, image_geometry(image))
        shown = ", ".join(map(str, frames[:12])) + (", ..." if len(frames) > 12 else "")
        self.found.value = f"annotated: {shown or 'none'} ({len(frames)} frame(s))"
        return frames

    def settings(self) -> TrainingSettings:
        return TrainingSettings.make(
            steps=int(self.steps.value),
            validation_frames=int(self.validation.value),
            like=self._run_options(),
        )

    # -- actions ---------------------------------------------------------------------------
    def start(self, value=None):
        """Fine-tune on the chosen frames; returns the worker, or None (the reason shown)."""
        self.show_found()
        image = self._image()
        try:
            frames = parse_frames(self.frames.value, image_geometry(image).n_frames) if image \
                else None  # fmt: skip
            source = self._model_source()
        except ValueError as exc:
            self.training.notify(str(exc), "error")
            return None
        return self.training.start(image, self.annotations.value, source, self.settings(),
                                   frames)  # fmt: skip

    def stop(self, value=None) -> None:
        """Stop after the current step: the best state so far becomes the tuned model."""
        self.training.stop()
        self.stop_button.enabled = False

    def save_adapters(self, path, *, overwrite: bool = False):
        """Write the tuned adapters to ``path``; returns the path or None."""
        return self.training.save_adapters(path, overwrite=overwrite)

    def _on_save_clicked(self, value=None) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.save_button.native, "Save the tuned adapters", "tuned_adapters.pth",
            "adapter checkpoint (*.pth *.pt)",
        )  # fmt: skip
        if path:  # the dialog already asked before replacing a file
            self.save_adapters(path, overwrite=True)

    def _on_use_changed(self, value=None) -> None:
        if self.use_model.value != self.training.using:
            self.training.use(self.use_model.value)

    # -- what the training reports ---------------------------------------------------------
    def _show_status(self, message: str) -> None:
        self.status.value = message

    def _on_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.stop_button.enabled = running
        if running:
            steps = self.training.settings.steps
            self.curve.clear(steps)
            self.progress.max = steps
            self.progress.value = 0

    def _on_step(self, stats) -> None:
        self.curve.add(stats)
        self.progress.value = stats.step

    def _on_model_changed(self, which: str) -> None:
        tuned = self.training.tuned is not None
        self.use_model.enabled = tuned
        self.save_button.enabled = tuned
        if self.use_model.value != which:
            self.use_model.value = which
