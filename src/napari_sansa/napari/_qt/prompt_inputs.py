"""The prompt inputs of the dock widget: image, prompt layers, new prompt layers, the
class and polarity of the next prompt, following the viewer's layers.

A mixin of :class:`~napari_sansa.napari._qt.widget.SansaWidget` (which has
``viewer`` and ``session``); its controls are the widget's public attributes.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, PushButton, Select, SpinBox

from napari_sansa.core.fusion import label_dtype
from napari_sansa.napari.geometry import fit_problem, is_prompt_layer, layer_role
from napari_sansa.napari.imageset import META_IMAGE
from napari_sansa.napari.outputs import (
    defaults_event,
    new_points_layer,
    new_shapes_layer,
    read_prompt_defaults,
    references_layer,
    write_prompt_defaults,
)
from napari_sansa.napari.plan import NO_IMAGE

if TYPE_CHECKING:
    import napari

__all__ = ["MAX_CLASS", "PromptInputs"]

MAX_CLASS = 2**31 - 1  # a Qt spin box's limit; the layers themselves go to uint32


def _full_names(qlist, tips=None) -> None:
    """Long layer names in a narrow list: cut on the right (the chosen image's own layers
    are shown without its name, so what tells them apart comes first), whole in the
    tooltip (``tips``: row -> tooltip)."""
    from qtpy.QtCore import Qt

    qlist.setTextElideMode(Qt.TextElideMode.ElideRight)
    qlist.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    for i in range(qlist.count()):
        item = qlist.item(i)
        item.setToolTip(tips[i] if tips and i < len(tips) else item.text())


def check_boxes(select) -> None:
    """Show which items of a magicgui Select are chosen with check boxes (a click on an
    item, or on its box, chooses it or not; the selection and the boxes agree)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QAbstractItemView

    qlist = select.native
    qlist.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
    syncing = [False]
    shown = Qt.ItemDataRole.UserRole + 7  # the box's state as last set here

    def boxes_from_selection():
        syncing[0] = True
        try:
            for i in range(qlist.count()):
                item = qlist.item(i)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                state = Qt.CheckState.Checked if item.isSelected() else Qt.CheckState.Unchecked
                if item.checkState() != state or item.data(shown) is None:
                    item.setCheckState(state)
                item.setData(shown, item.checkState() == Qt.CheckState.Checked)
        finally:
            syncing[0] = False

    def selection_from_box(item):
        checked = item.checkState() == Qt.CheckState.Checked
        if syncing[0] or item.data(shown) is None or item.data(shown) == checked:
            return  # not a click on the box (a tooltip, a flag, a new item)
        syncing[0] = True
        try:
            item.setData(shown, checked)
        finally:
            syncing[0] = False
        if item.isSelected() != checked:
            item.setSelected(checked)

    qlist.itemSelectionChanged.connect(boxes_from_selection)
    qlist.itemChanged.connect(selection_from_box)
    select._sansa_boxes = boxes_from_selection  # reset_choices makes new items
    boxes_from_selection()


class PromptInputs:
    """Which image, which prompt layers, and what the next prompt gets."""

    viewer: napari.viewer.Viewer

    def _build_prompt_inputs(self) -> None:
        self._seen: weakref.WeakSet = weakref.WeakSet()
        self._watched = None  # weak reference to the active prompt layer
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.other_images = Select(
            label="with images",
            choices=self._other_image_choices,
            tooltip="more image layers of the same set, of any sizes: the ones with prompts "
            "are references, the others are labelled, each in its own output layer",
        )
        self.prompt_layers = Select(
            label="prompt layers",
            choices=self._prompt_choices,
            tooltip="Points, Shapes and Labels layers holding the prompts; a frame with "
            "any prompt is a reference, the others are labelled",
        )
        self.new_points_button = PushButton(text="+ points", tooltip="new Points layer for clicks")
        self.new_shapes_button = PushButton(text="+ shapes", tooltip="new Shapes layer for boxes")
        self.new_labels_button = PushButton(text="+ labels", tooltip="Labels layer to paint in")
        self.class_id = SpinBox(
            label="class",
            min=1,
            max=MAX_CLASS,
            value=1,
            tooltip="class id of the next prompt in the selected Points/Shapes/Labels layer",
        )
        self.polarity = ComboBox(
            label="click",
            choices=["positive", "negative"],
            value="positive",
            tooltip="positive: a click on the object; negative: a click that is not",
        )

    # -- choices ----------------------------------------------------------------------
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer_role(layer) is None
        ]

    def _other_image_choices(self, _widget=None):
        image = self.image.value
        return [(name, layer) for name, layer in self._image_choices() if layer is not image]

    def images(self) -> list:
        """The image set: the image chosen under 'image', then those under 'with images'."""
        image = self.image.value
        if image is None:
            return []
        return [image, *(layer for layer in self.other_images.value if layer is not image)]

    def select_images(self, names) -> list:
        """Choose the image set by layer names (one stack layer, or several image
        layers); the first one is the image shown under 'image'. Returns the layers."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("select_images needs at least one image layer name")
        layers = [self.viewer.layers[name] for name in names]
        self.image.value = layers[0]
        self.other_images.value = layers[1:]
        self._on_images_changed()
        return self.images()

    def _prompt_choices(self, _widget=None):
        return [(self._shown_name(layer), layer) for layer in self.viewer.layers
                if is_prompt_layer(layer)]  # fmt: skip

    def _shown_name(self, layer) -> str:
        """A prompt layer's name in the list: for the chosen image's own layers the part
        after the image's name ('[sansa points]'), else the name and the layer's kind."""
        image = self.image.value if hasattr(self, "image") else None
        name = layer.name
        if image is not None and name.startswith(f"{image.name} ["):
            return name[len(image.name) + 1 :]  # '[sansa points]': the image's own
        return f"{name} ({type(layer).__name__.lower()})"

    def _fits(self, layer) -> bool:
        """Whether ``layer`` holds prompts for the chosen images: made for one of them,
        or made for none and of a shape that fits (a layer made for another image is
        that image's, even where it would fit)."""
        image = self.image.value
        if image is None:
            return False
        owner = (getattr(layer, "metadata", None) or {}).get(META_IMAGE)
        if owner is not None and owner in self.viewer.layers:
            return owner in {im.name for im in self.images()}
        try:
            return fit_problem(image, layer) is None
        except ValueError:
            return False

    def _ticks(self, layer) -> bool:
        """Whether ``layer`` is ticked by itself: it fits the chosen images and is not a
        folder run's result opened to look at (that one is ticked by hand, if at all)."""
        return self._fits(layer) and layer_role(layer) != "result"

    def reset_choices(self, *_) -> None:
        """Follow the viewer's layers: keep the chosen prompt layers (also through
        renames), and choose new ones that fit the image."""
        if not self.session.alive:
            return
        chosen = list(self.prompt_layers.value)
        for section in (*self.sections.values(), self.advanced):  # not children of self
            section.reset_choices()
        self.other_images.visible = bool(self.other_images.choices)
        candidates = [value for _, value in self._prompt_choices()]
        new = [layer for layer in candidates if layer not in self._seen]
        for layer in new:
            self._seen.add(layer)
        keep = [layer for layer in chosen if layer in candidates]
        keep += [layer for layer in new if layer not in keep and self._ticks(layer)]
        if keep != list(self.prompt_layers.value):
            self.prompt_layers.value = keep
        self._show_prompt_list()

    def _show_prompt_list(self) -> None:
        tips = [f"{layer.name}: used by the next run when ticked"
                for layer in self.prompt_layers.choices]  # fmt: skip
        _full_names(self.prompt_layers.native, tips)
        _full_names(self.other_images.native)
        boxes = getattr(self.prompt_layers, "_sansa_boxes", None)
        if boxes is not None:
            boxes()

    def _choose_prompt_layer(self, layer) -> None:
        if layer not in self.prompt_layers.value:
            self.prompt_layers.value = [*self.prompt_layers.value, layer]

    def _on_image_changed(self, value=None) -> None:
        others = [layer for layer in self.other_images.value if layer is not self.image.value]
        self.other_images.reset_choices()
        self.other_images.value = others
        self.other_images.visible = bool(self.other_images.choices)
        self._on_images_changed()

    def _on_images_changed(self, value=None) -> None:
        image = self.image.value
        candidates = [value for _, value in self._prompt_choices()]
        self.prompt_layers.reset_choices()  # the names shown depend on the image
        self.prompt_layers.value = [layer for layer in candidates if self._ticks(layer)]
        self._show_prompt_list()
        self.axes.update(image)
        single = len(self.images()) <= 1 or bool(self.as_channels.value)
        self.as_channels.visible = len(self.images()) > 1
        self.axes.ranges.enable(single)

    # -- the class and polarity of the next prompt ---------------------------------------
    def _on_active_layer(self, event=None) -> None:
        """Follow the active layer: show the class (and polarity) of its next item."""
        if not self.session.alive:
            return
        old = self._watched() if self._watched is not None else None
        if old is not None:
            defaults_event(old).disconnect(self._pull_prompt_defaults)
        layer = self.viewer.layers.selection.active
        emitter = defaults_event(layer)
        self._watched = None
        if emitter is not None:
            emitter.connect(self._pull_prompt_defaults)
            self._watched = weakref.ref(layer)
        self._pull_prompt_defaults()

    def _pull_prompt_defaults(self, event=None) -> None:
        if not self.session.alive:
            return
        label, positive = read_prompt_defaults(self.viewer.layers.selection.active)
        with self.class_id.changed.blocked(), self.polarity.changed.blocked():
            if label is not None:
                self.class_id.value = min(label, MAX_CLASS)
            if positive is not None:
                self.polarity.value = "positive" if positive else "negative"

    def _on_prompt_defaults_changed(self, value=None) -> None:
        """Class selector and polarity toggle -> what the active layer gives its next item."""
        write_prompt_defaults(
            self.viewer.layers.selection.active,
            self.class_id.value,
            self.polarity.value == "positive",
        )

    # -- new prompt layers --------------------------------------------------------------
    def _require_image(self):
        image = self.image.value
        if image is None:
            self.session.fail(NO_IMAGE)
        return image

    def new_points_layer(self, value=None) -> napari.layers.Points | None:
        """A Points layer for clicks of the chosen class and polarity ('+ points')."""
        image = self._require_image()
        if image is None:
            return None
        positive = self.polarity.value == "positive"
        return new_points_layer(self.viewer, image, self.class_id.value, positive)

    def new_shapes_layer(self, value=None) -> napari.layers.Shapes | None:
        """A Shapes layer for boxes, scribbles and polygons ('+ shapes')."""
        image = self._require_image()
        if image is None:
            return None
        return new_shapes_layer(self.viewer, image, self.class_id.value)

    def new_labels_layer(self, value=None) -> napari.layers.Labels | None:
        """The image's references layer, ready to paint the chosen class ('+ labels')."""
        image = self._require_image()
        if image is None:
            return None
        label = int(self.class_id.value)
        layer = references_layer(self.viewer, image, label_dtype(max(label, 255)))
        self._choose_prompt_layer(layer)
        layer.selected_label = label
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        return layer
