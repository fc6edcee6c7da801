"""The widget's axes controls: which axis holds the channels, which channels make a
frame, the axis a sequential run follows, and the frames to label on each frame axis.
Shown only for images that need them."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label, SpinBox

from napari_sansa.napari.axes import RGB, describe_axes, set_axes
from napari_sansa.napari.geometry import (
    chosen_level,
    image_geometry,
    level_count,
    multiscale_problem,
    set_level,
)

__all__ = ["AxesPanel", "FrameRanges"]


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
            tooltip="channel axis: the axis that holds the channels (not frames); taken "
            "from the layer's axis labels ('c') when it has them",
        )
        self.channels = ComboBox(
            label="channels",
            choices=self._channel_choices,
            tooltip="channels: which channel SANSA sees (as a gray image), or up to three "
            "as red, green and blue",
        )
        self.sequential_axis = ComboBox(
            label="sequential along",
            choices=self._sequential_choices,
            tooltip="sequential mode follows this axis, separately at each index of the "
            "other frame axes (for example z within each time point)",
        )
        self.level = ComboBox(
            label="level",
            choices=self._level_choices,
            tooltip="a multiscale image: the resolution level a run labels (0: the full "
            "resolution, read by tiles when 'tile size' is set; a lower level is faster and "
            "coarser). Prompts drawn at any zoom are taken at this level's pixels",
        )
        self.level.visible = False
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        self.ranges = FrameRanges()
        # the axis and the channels side by side, without their labels (their tooltips
        # and the note's say "channels on c: channel 0 as gray"): the main page fits
        # napari's default window with a (T, C) time-lapse (two rows under their labels
        # took 4 rows and made it scroll)
        self.channel_row = Container(
            layout="horizontal", labels=False, widgets=[self.channel_axis, self.channels]
        )
        self.channel_row.margins = (0, 0, 0, 0)
        self.channel_row.native.layout().setSpacing(2)
        self.channel_row.native.layout().setStretch(0, 2)
        self.channel_row.native.layout().setStretch(1, 3)
        #: shown under the image (the sequential axis goes to the run section)
        self.widgets = [self.level, self.channel_row, self.note]
        self.channel_axis.changed.connect(self._on_axis)
        self.channels.changed.connect(self._on_channels)
        self.level.changed.connect(self._on_level)

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

    def _level_choices(self, _widget=None):
        image = self._image
        if image is None or level_count(image) < 2:
            return [("0", 0)]
        out = []
        for k, level in enumerate(image.data):
            shape = tuple(int(n) for n in level.shape)
            h, w = shape[-3:-1] if image.rgb else shape[-2:]
            out.append((f"{k}: {h}x{w}", k))
        return out

    def _sequential_choices(self, _widget=None):
        g = self._geometry
        axes = g.frame_axes if g is not None else ()
        return [("-", None)] + [
            (f"{g.axis_name(k)} ({g.leading[k]})", g.axis_name(k)) for k in axes
        ]

    def update(self, image) -> None:
        """Follow the chosen image: its leading axes, its channel axis, its frame axes."""
        self._image = image
        problem = None
        with self.level.changed.blocked():
            self.level.reset_choices()
            self.level.value = 0 if image is None else chosen_level(image)
        self.level.visible = image is not None and level_count(image) > 1
        try:
            problem = None if image is None else multiscale_problem(image)
            if problem is not None:
                raise ValueError(problem)
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
            names = [g.axis_name(k) for k in frame_axes]
            self.sequential_axis.value = along if along in names else names[-1]
        leading = g.leading if g is not None else ()
        several = len(leading) >= 2 or (g is not None and g.channel_axis is not None)
        self.channel_row.visible = several
        self.channels.visible = g is not None and g.channel_axis is not None
        self.sequential_axis.visible = len(frame_axes) >= 2
        self.note.visible = several
        self.ranges.update(g)
        if problem is not None:
            self.note.value = self.note.tooltip = problem
            self.note.visible = True
        elif g is not None:
            # the channel boxes above say the channels: the note the frames (one line,
            # not three: the main page fits), its tooltip the whole sentence
            self.note.tooltip = describe_axes(g)
            self.note.value = describe_axes(g, channels=g.channel_axis is None)

    def _on_axis(self, value=None) -> None:
        if self._image is None:
            return
        set_axes(self._image, self.channel_axis.value, (0,))
        self.update(self._image)
        self._on_change()

    def _on_level(self, value=None) -> None:
        if self._image is None or level_count(self._image) < 2:
            return
        set_level(self._image, int(self.level.value))
        self.update(self._image)
        self._on_change()

    def _on_channels(self, value=None) -> None:
        if self._image is None or self.channel_axis.value is None:
            return
        set_axes(self._image, self.channel_axis.value, self.channels.value)
        self.update(self._image)
        self._on_change()


class FrameRanges:
    """The frames to label: one 'first .. last' pair per frame axis of the image (one
    pair, 'frames', for a stack with one frame axis); the frames labelled are the
    product of the ranges. ``box`` holds the rows; ``value()`` gives the ranges as
    ``{axis position: (first, last)}`` for the plan."""

    def __init__(self):
        self.box = Container(labels=False)
        self.box.margins = (0, 0, 0, 0)
        self.rows: list[tuple[Container, Label, SpinBox, SpinBox]] = []
        self._axes: tuple[int, ...] = ()
        self._add_row()

    def _add_row(self) -> None:
        name = Label(value="frames")
        first = SpinBox(min=0, max=0, tooltip="the first frame to label on this axis")
        last = SpinBox(min=0, max=0, tooltip="the last frame to label on this axis")
        to = Label(value="to")
        for spin in (first, last):  # no arrows: the dock is narrow (keys and the wheel step)
            spin.native.setButtonSymbols(spin.native.ButtonSymbols.NoButtons)
        row = Container(layout="horizontal", labels=False, widgets=[name, first, to, last])
        row.margins = (0, 0, 0, 0)
        name.native.setMinimumWidth(0)
        self.rows.append((row, name, first, last))
        self.box.append(row)

    @property
    def first(self) -> SpinBox:
        """The first row's 'first' (the whole range of a stack with one frame axis)."""
        return self.rows[0][2]

    @property
    def last(self) -> SpinBox:
        return self.rows[0][3]

    def update(self, geometry) -> None:
        """One row per frame axis of ``geometry`` (None: one empty row), each set to
        the whole axis."""
        axes = geometry.frame_axes if geometry is not None else ()
        self._axes = axes
        while len(self.rows) < max(len(axes), 1):
            self._add_row()
        for i, (row, name, first, last) in enumerate(self.rows):
            shown = i < max(len(axes), 1)
            row.visible = shown
            if not shown:
                continue
            size = geometry.leading[axes[i]] if i < len(axes) else 1
            name.value = geometry.axis_name(axes[i]) if len(axes) > 1 else "frames"
            name.tooltip = f"the frames to label along {name.value}: first, last (inclusive)"
            first.max = last.max = max(size - 1, 0)
            first.value, last.value = 0, size - 1
        self.enable(True)

    def enable(self, enabled: bool) -> None:
        """Ranges apply to one stack: hidden for an image set and for a single image."""
        self.box.visible = enabled and bool(self._axes)
        for _, _, first, last in self.rows:
            for spin in (first, last):
                spin.enabled = spin.max > 0

    def value(self) -> dict[int, tuple[int, int]]:
        """``{axis position: (first, last)}`` for each frame axis."""
        return {
            k: (int(first.value), int(last.value))
            for k, (_, _, first, last) in zip(self._axes, self.rows, strict=False)
        }

    def set(self, axis: int, first: int, last: int) -> None:
        """Set the range of a frame axis (its position among the leading axes)."""
        row = self.rows[self._axes.index(axis)]
        row[2].value, row[3].value = first, last
