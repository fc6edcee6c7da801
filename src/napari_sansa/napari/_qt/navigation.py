"""Moving the viewer to frames: the frame shown, going to a frame (of a stack or of an
image set), opening on the first painted reference.

A mixin of :class:`~napari_sansa.napari._qt.widget.SansaWidget` (which has ``viewer``,
``session`` and ``image``).
"""

from __future__ import annotations

import numpy as np

from napari_sansa.napari.geometry import image_geometry

__all__ = ["FrameNavigation"]


class FrameNavigation:
    """``current_frame``, ``go_to_frame`` and ``show_first_reference``."""

    def current_frame(self, image=None) -> int:
        """The frame of ``image`` shown by the viewer's sliders."""
        image = self.image.value if image is None else image
        geometry = image_geometry(image)
        if not geometry.leading:
            return 0
        data = np.asarray(image.world_to_data(self.viewer.dims.point), dtype=float)
        lead = np.clip(np.rint(data[: len(geometry.leading)]), 0, np.asarray(geometry.leading) - 1)
        return geometry.frame(lead)

    def go_to_frame(self, frame) -> None:
        """Move the viewer's sliders to a frame of the selected image; ``(part, frame)``:
        a frame of the last run's image set (its output becomes the active layer)."""
        image = self.image.value
        if isinstance(frame, tuple):
            part, frame = frame
            images = self.session.images
            image = images[part] if part < len(images) else None
            output = self.session.outputs.get(part)
            if output is not None and output in self.viewer.layers:
                self.viewer.layers.selection.active = output
        if image is None or not self.session.alive or image not in self.viewer.layers:
            return
        index = list(image_geometry(image).index(frame))
        shown = np.asarray(image.world_to_data(self.viewer.dims.point), dtype=float)
        for k, i in enumerate(index):
            if isinstance(i, slice):  # the channel axis: stay on the channel shown
                index[k] = int(max(np.rint(shown[k]), 0))
        world = image.data_to_world([*index, 0, 0])
        offset = self.viewer.dims.ndim - image.ndim
        for k in range(len(index)):
            self.viewer.dims.set_point(offset + k, world[k])

    def show_first_reference(self, event=None) -> None:
        """Show the first frame painted in the image's references layer (a sample or a
        reopened session opens on the frame that holds the prompts)."""
        from napari_sansa.napari.outputs import references_name

        image = self.image.value
        name = None if image is None else references_name(image.name)
        if name is None or name not in self.viewer.layers or not self.session.alive:
            return
        layer = self.viewer.layers[name]
        try:
            geometry = image_geometry(image)
            if tuple(layer.data.shape) != geometry.shape:
                return
            frames = (f for f in range(geometry.n_frames) if geometry.plane(layer.data, f).any())
            first = next(frames, None)
        except ValueError:
            return
        if first is not None:
            self.go_to_frame(first)

    def _on_inserted(self, event=None) -> None:
        from napari_sansa.napari.geometry import layer_role

        layer = getattr(event, "value", None)
        if layer is not None and layer_role(layer) == "references" and np.any(layer.data):
            self.show_first_reference()
