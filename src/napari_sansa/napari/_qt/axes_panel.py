"""The widget's axes controls: which axis holds the channels, which channels make a
frame, and the axis a sequential run follows. Shown only for images that need them."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Label

from napari_sansa.napari.axes import RGB, describe_axes, set_axes
from napari_sansa.napari.geometry import image_geometry

__all__ = ["AxesPanel"]


def _plain_geometry(image):
    """The image's leading axes without a channel axis (to offer the axes when the
    declared ones cannot be used), or None."""
    from napari_sansa.napari.axes import declared_names
    from napari_sansa.napari.geometry import StackGeometry, image_data

    shape = tuple(int(s) for s in image_data(image).shape)
    spatial = shape[:-1] if image.rgb else shape
    if len(spatial) < 2:
        return None
    names = declared_names(image)
    leading = spatial[:-2]
    return StackGeometry(
        leading,
        spatial[-2:],
        bool(image.rgb),
        axis_names=names if len(names) == len(leading) else (),
    )


NONE = "none"


class AxesPanel:
    """``channel_axis`` (a leading axis or None), ``channels`` (a tuple of channel
    indices), ``sequential_axis`` (a frame axis) and ``note`` (what was chosen, in a
    sentence). ``changed`` callbacks run after the person changes the axes."""

    def __init__(self, on_change):
        self._on_change = on_change
        self._image = None
        self._geometry = None
        self.channel_axis = ComboBox(
            label="channel axis",
            choices=self._axis_choices,
            tooltip="the axis that holds the channels (not frames); taken from the layer's "
            "axis labels ('c') when it has them",
        )
        self.channels = ComboBox(
            label="channels",
            choices=self._channel_choices,
            tooltip="which channel SANSA sees (as a gray image), or up to three as red, "
            "green and blue",
        )
        self.sequential_axis = ComboBox(
            label="sequential along",
            choices=self._sequential_choices,
            tooltip="sequential mode follows this axis, separately at each index of the "
            "other frame axes (for example z within each time point)",
        )
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        #: shown under the image (the sequential axis goes to the run section)
        self.widgets = [self.channel_axis, self.channels, self.note]
        self.channel_axis.changed.connect(self._on_axis)
        self.channels.changed.connect(self._on_channels)

    # -- choices (callables: the widget's reset_choices calls them) ----------------------
    def _axis_choices(self, _widget=None):
        g = self._geometry
        leading = g.leading if g is not None else ()
        return [(NONE, None)] + [(f"{g.axis_name(k)} ({n})", k) for k, n in enumerate(leading)]

    def _channel_choices(self, _widget=None):
        g = self._geometry
        if g is None or g.channel_axis is None:
            return [("channel 0", (0,))]
        n = g.leading[g.channel_axis]
        choices = [(f"channel {c}", (c,)) for c in range(n)]
        if n >= 2:
            rgb = tuple(range(min(n, 3)))
            text = "".join(colour[0].upper() for colour in RGB[: len(rgb)])
            choices.append((f"{', '.join(map(str, rgb))} as {text}", rgb))
        return choices

    def _sequential_choices(self, _widget=None):
        g = self._geometry
        axes = g.frame_axes if g is not None else ()
        return [("-", None)] + [(f"{g.axis_name(k)} ({g.leading[k]})", k) for k in axes]

    def update(self, image) -> None:
        """Follow the chosen image: its leading axes, its channel axis, its frame axes."""
        self._image = image
        problem = None
        try:
            g = image_geometry(image) if image is not None else None
        except ValueError as exc:
            g, problem = _plain_geometry(image), str(exc)
        self._geometry = g
        along = self.sequential_axis.value
        with self.channel_axis.changed.blocked(), self.channels.changed.blocked():
            self.channel_axis.reset_choices()
            self.channel_axis.value = None if g is None else g.channel_axis
            self.channels.reset_choices()
            if g is not None and g.channels in [v for _, v in self._channel_choices()]:
                self.channels.value = g.channels
        self.sequential_axis.reset_choices()
        frame_axes = g.frame_axes if g is not None else ()
        if len(frame_axes) >= 2:
            self.sequential_axis.value = along if along in frame_axes else frame_axes[-1]
        leading = g.leading if g is not None else ()
        several = len(leading) >= 2 or (g is not None and g.channel_axis is not None)
        self.channel_axis.visible = several
        self.channels.visible = g is not None and g.channel_axis is not None
        self.sequential_axis.visible = len(frame_axes) >= 2
        self.note.visible = several
        if problem is not None:
            self.note.value = problem
            self.note.visible = True
        elif g is not None:
            self.note.value = describe_axes(g)

    def _on_axis(self, value=None) -> None:
        if self._image is None:
            return
        set_axes(self._image, self.channel_axis.value, (0,))
        self.update(self._image)
        self._on_change()

    def _on_channels(self, value=None) -> None:
        if self._image is None or self.channel_axis.value is None:
            return
        set_axes(self._image, self.channel_axis.value, self.channels.value)
        self.update(self._image)
        self._on_change()
