"""The widget's 'Label a folder' section: a folder on disk as the images to label.

The input and output folders (a line and a Browse button each), the finished outputs
(double-click, or 'Open result', shows one over its image), and the wiring of a
:class:`~napari_sansa.napari.folder.FolderRun` to the widget's footer (Run, Stop, the
progress bar and the status line). The run itself is napari/folder.py's.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, FileEdit, Label, PushButton

from napari_sansa.napari._qt.layout import section
from napari_sansa.napari._qt.workers import create_worker
from napari_sansa.napari.folder import FolderRun

__all__ = ["FolderPanel"]


class FolderPanel:
    """Folder controls; ``section`` goes into the widget's sections."""

    def __init__(self, viewer, models):
        from qtpy.QtWidgets import QAbstractItemView, QListWidget

        self.run = FolderRun(viewer, models, create_worker)
        self.enabled = CheckBox(
            text="a folder on disk",
            value=False,
            tooltip="Run labels every image (and TIFF stack) of the input folder from the "
            "prompts drawn here, and writes the labels to the output folder as "
            "'napari-sansa segment' does; a second Run goes on where the last one stopped",
        )
        self.input_folder = FileEdit(label="images in", mode="d", nullable=True)
        self.input_folder.tooltip = "the folder of images to label (its subfolders too)"
        self.output_folder = FileEdit(label="labels to", mode="d", nullable=True)
        self.output_folder.tooltip = (
            "where the label images go (one TIFF per image, same names, scores.csv): a "
            "folder outside the input folder"
        )
        self.open_button = PushButton(
            text="Open result", tooltip="show the chosen output over its image"
        )
        self.note = Label(value="finished outputs (double-click one to open it):")
        self.note.native.setWordWrap(True)  # the section's whole width
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setMaximumHeight(90)
        self.list.setToolTip("double-click an output to show it over its image")
        self.section = section(
            self.enabled, self.input_folder, self.output_folder, self.note, self.open_button
        )
        layout = self.section.native.layout()
        layout.insertWidget(layout.indexOf(self.note.native) + 1, self.list)
        self.enabled.changed.connect(self._show)
        self.open_button.changed.connect(self.open_selected)
        self.list.itemDoubleClicked.connect(lambda item: self.open_row(self.list.row(item)))
        self.run.result.connect(self._add)
        self._show(False)

    # -- the folder mode ----------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Run labels the folder (the box is ticked)."""
        return bool(self.enabled.value)

    def select(self, input_folder, output_folder) -> None:
        """Choose the folders (and the folder mode), as a person would."""
        self.input_folder.value = input_folder
        self.output_folder.value = output_folder
        self.enabled.value = True

    def _show(self, on) -> None:
        for w in (self.input_folder, self.output_folder, self.note, self.open_button):
            w.visible = bool(on)
        self.list.setVisible(bool(on))

    def start(self, images, prompt_layers, model, settings):
        return self.run.start(
            self.input_folder.value, self.output_folder.value, images, list(prompt_layers), model,
            settings,
        )  # fmt: skip

    # -- results ------------------------------------------------------------------------
    def _add(self, result) -> None:
        self.list.addItem(result.text)
        item = self.list.item(self.list.count() - 1)
        item.setToolTip(f"{result.source}\n{result.output or result.message}")

    def open_row(self, row: int):
        if not 0 <= row < len(self.run.results):
            return None
        return self.run.open_result(self.run.results[row])

    def open_selected(self, value=None):
        return self.open_row(self.list.currentRow())

    # -- the widget's footer ------------------------------------------------------------
    def connect(self, widget) -> None:
        """Show the folder run in ``widget``'s footer; stop it when the widget goes."""
        run = self.run
        run.status.connect(widget._show_status)
        run.progress.connect(lambda done, total: self._progress(widget, done, total))
        run.running.connect(lambda on: self._running(widget, on))
        widget.native.destroyed.connect(run.close)

    def _running(self, widget, on: bool) -> None:
        widget.run_button.enabled = not on
        widget.stop_button.enabled = on
        if on:
            self.list.clear()
            widget.progress.max = 1
            widget.progress.value = 0

    @staticmethod
    def _progress(widget, done: int, total: int) -> None:
        widget.progress.max = max(total, 1)
        widget._show_progress(done)
