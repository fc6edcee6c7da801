"""The dock's preview switch and click-fix buttons, wired to ``session.previews``.

Under the prompt controls, in one row: "preview" (the switch), "+ fix" (a Points
layer whose clicks redraw a class on a labelled frame) and "clear" (the chosen
class's prompts off the shown frame). It follows the viewer: a prompt edit, another
frame, another active layer or image, a model or setting change ask the session for
the shown frame's preparation and preview, at most once per :data:`DEBOUNCE_S` of
quiet (a Qt single-shot timer), never computing on the event loop (the session's
worker does that).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, Label, PushButton

from napari_sansa.napari._qt.layout import elided, row, tight
from napari_sansa.napari.geometry import apply_matrix, image_geometry, layer_role, layer_to_image
from napari_sansa.napari.preview import DEBOUNCE_S

__all__ = ["PreviewPanel"]


class PreviewPanel:
    """The preview switch and the click-fix actions of a :class:`SansaWidget`."""

    def __init__(self, widget):
        from qtpy.QtCore import QTimer

        self.widget = widget
        self.viewer = widget.viewer
        self.previews = widget.session.previews
        self.switch = CheckBox(
            text="preview",
            value=True,
            tooltip="show at once what SANSA takes from the prompts of the shown frame (in "
            "'<image> [sansa preview]'); the frame's features are prepared in the background",
        )
        self.fix_button = PushButton(
            text="+ fix",
            tooltip="a Points layer for fixing labelled frames: a click (positive or negative, "
            "class as chosen above) redraws that class on the shown frame with SAM2; Ctrl+Z in "
            "the output layer undoes it",
        )
        self.clear_button = PushButton(
            text="clear",
            tooltip="remove the chosen class's prompts (and fix clicks) from the shown frame",
        )
        self.state = Label(value="")  # what the preview does: preparing, ready, waits ...
        elided(self.state)  # one line, cut with '…' where the dock is narrow; whole: tooltip
        # one row (the main page fits napari's default window): switch, fix, clear
        self.row = tight(row(self.switch, self.fix_button, self.clear_button))
        widget.main_extras.extend([self.row, self.state])
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(DEBOUNCE_S * 1000))
        self._timer.timeout.connect(self.update)
        self._edited = False  # a prompt changed since the last update
        self._fix_pending = None  # the fix layer changed: (layer) to read at the update
        self._watched: set[int] = set()
        self._connect()

    # -- wiring -------------------------------------------------------------------------
    def _connect(self) -> None:
        w, viewer = self.widget, self.viewer
        self.switch.changed.connect(self._on_switch)
        self.previews.status.connect(self._show_state)
        self.fix_button.changed.connect(self.new_fix_layer)
        self.clear_button.changed.connect(self.clear_class)
        viewer.dims.events.current_step.connect(self.schedule)
        viewer.layers.selection.events.active.connect(self.schedule)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_prompt_edit)
        for control in (w.image, w.other_images, w.prompt_layers, w.as_channels):
            control.changed.connect(self._on_prompt_edit)
        for control in (*w.model_panel.widgets, *w.advanced):  # the model and the run's settings
            if hasattr(control, "changed"):
                control.changed.connect(self._on_prompt_edit)
        training = w.training_panel.training
        self.previews.blockers.append(lambda: "fine-tuning is running" if training.busy() else None)
        training.running.connect(lambda running: None if running else self.previews.resume())
        folder = w.folder.run  # a folder on disk labelled from the widget
        self.previews.blockers.append(lambda: "a folder run is going" if folder.busy() else None)
        folder.running.connect(lambda running: None if running else self.previews.resume())
        for layer in viewer.layers:
            self._watch(layer)

    def _on_inserted(self, event) -> None:
        self._watch(event.value)
        self.schedule()

    def _watch(self, layer) -> None:
        from napari.layers import Labels, Points, Shapes

        if id(layer) in self._watched or not isinstance(layer, (Points, Shapes, Labels)):
            return
        if layer_role(layer) in ("output", "probability", "objects", "preview"):
            return
        self._watched.add(id(layer))
        events = layer.events
        if layer_role(layer) == "fix":
            events.data.connect(lambda event, layer=layer: self._on_fix_click(layer, event))
            return
        events.data.connect(self._on_prompt_edit)
        for name in ("paint", "features", "set_data"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.connect(self._on_prompt_edit)

    def _on_prompt_edit(self, event=None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action).endswith("ing"):  # 'adding', 'changing'...
            return  # napari says it again when done
        self._edited = True
        self.schedule()

    def _on_fix_click(self, layer, event=None) -> None:
        action = str(getattr(event, "action", "added"))
        if action.endswith(("added", "changed")):
            self._fix_pending = layer
            self.schedule()

    @property
    def message(self) -> str:
        """The preview's state as last said (the line shows it cut to the dock's width)."""
        return self.state.native.property("full") or ""

    def _show_state(self, message: str) -> None:
        self.state.native.setProperty("full", message)
        self.state.native.refresh_elided()

    def _on_switch(self, value=None) -> None:
        on = bool(self.switch.value)
        self.previews.enabled = on
        for layer in self.viewer.layers:
            if layer_role(layer) == "preview":
                layer.visible = on
        if on:
            self._edited = True
            self.schedule()
        else:
            self._show_state("previews off")

    def schedule(self, event=None) -> None:
        """Ask for an update after :data:`DEBOUNCE_S` of quiet (restarts the wait)."""
        if self.widget.session.alive:
            self._timer.start()

    # -- the update (main thread, after the quiet time) -----------------------------------
    def _inputs(self):
        w = self.widget
        images = w.images()
        if not images:
            return None
        try:
            model = w.training_panel.training.model_source(w.model_panel.settings())
            settings = w.run_settings()
        except ValueError as exc:
            self._show_state(f"preview: {exc}")
            return None
        as_channels = bool(w.as_channels.value) and len(images) > 1
        frames = [(i, w.current_frame(im)) for i, im in enumerate(images)]
        if as_channels:
            frames = frames[:1]
        return images, model, settings, frames, as_channels

    def update(self) -> None:
        """Prepare the shown frame (when a prompt layer is active) and preview it (when
        its prompts changed or another frame is shown); apply a pending click fix."""
        if not self.widget.session.alive or not self.previews.enabled:
            return
        inputs = self._inputs()
        if inputs is None:
            return
        images, model, settings, frames, as_channels = inputs
        fix, self._fix_pending = self._fix_pending, None
        if fix is not None and fix in self.viewer.layers:
            self._apply_fix(fix, images, model, settings)
            return
        layers = list(self.widget.prompt_layers.value)
        active = self.viewer.layers.selection.active
        if active is not None and (active in layers or layer_role(active) == "fix"):
            part = _part_of(active, images)
            self.previews.prepare(images, model, settings, [frames[part]], as_channels)
        self._edited = False
        self.previews.request(images, layers, model, settings, frames, as_channels)

    # -- fixing with clicks -------------------------------------------------------------
    def new_fix_layer(self, value=None):
        """The image's "[sansa fix]" Points layer, active and in add mode."""
        image = self.widget._require_image()
        if image is None:
            return None
        layer = self.previews.fix_layer(image)
        from napari_sansa.napari.outputs import write_prompt_defaults

        positive = self.widget.polarity.value == "positive"
        write_prompt_defaults(layer, int(self.widget.class_id.value), positive)
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        self._watch(layer)
        return layer

    def new_fix_box_layer(self, value=None):
        """The image's "[sansa fix box]" Shapes layer, active, drawing rectangles: a box
        redraws the chosen class on the shown frame."""
        image = self.widget._require_image()
        if image is None:
            return None
        layer = self.previews.fix_box_layer(image)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self._watch(layer)
        return layer

    def _apply_fix(self, layer, images, model, settings) -> None:
        from napari.layers import Shapes

        from napari_sansa.napari.imageset import META_IMAGE

        name = (layer.metadata or {}).get(META_IMAGE)
        image = next((im for im in images if im.name == name), None)
        if image is None or not len(layer.data):
            return
        frame = self.widget.current_frame(image)
        geometry = image_geometry(image)
        if isinstance(layer, Shapes):  # the last box drawn, for the chosen class
            corners = apply_matrix(layer_to_image(layer, image), np.asarray(layer.data[-1], float))
            lead = np.rint(corners[0, :-2])
            if lead.size and (
                np.any((lead < 0) | (lead >= np.asarray(geometry.leading)))
                or geometry.frame(lead) != frame
            ):
                self.widget.session.notify(
                    f"fix: the last box is not on {geometry.describe(frame)} of '{image.name}'",
                    popup=False,
                )
                return
            low, high = corners[:, -2:].min(axis=0), corners[:, -2:].max(axis=0)
            box = (float(low[0]), float(low[1]), float(high[0]), float(high[1]))
            label = int(self.widget.class_id.value)
            self.previews.fix(image, frame, label, model, settings, box=box)
            return
        coords = apply_matrix(layer_to_image(layer, image), np.asarray(layer.data, float))
        labels = layer.features["label"].to_numpy().astype(int)
        positive = layer.features["positive"].to_numpy().astype(bool)
        lead = np.rint(coords[:, :-2])
        on = np.array(
            [
                not lead.shape[1]
                or (
                    np.all((lead[i] >= 0) & (lead[i] < np.asarray(geometry.leading)))
                    and geometry.frame(lead[i]) == frame
                )
                for i in range(len(coords))
            ]
        )
        last = int(labels[-1])
        keep = on & (labels == last)
        if not keep.any():
            self.widget.session.notify(
                f"fix: the last click is not on {geometry.describe(frame)} of '{image.name}'",
                popup=False,
            )
            return
        self.previews.fix(
            image, frame, last, model, settings,
            points=coords[keep, -2:], positive=positive[keep],
        )  # fmt: skip

    def clear_class(self, value=None) -> int:
        """Remove the chosen class's prompts from the shown frame of the image."""
        image = self.widget._require_image()
        if image is None:
            return 0
        label = int(self.widget.class_id.value)
        frame = self.widget.current_frame(image)
        return self.previews.clear_class(image, frame, label, self.widget.prompt_layers.value)


def _part_of(layer, images) -> int:
    from napari_sansa.napari.imageset import META_IMAGE

    name = (getattr(layer, "metadata", None) or {}).get(META_IMAGE)
    names = [im.name for im in images]
    return names.index(name) if name in names else 0
