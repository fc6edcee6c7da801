"""An image layer's axes: which leading axis holds its channels, which make a frame.

napari layers may name their axes (``layer.axis_labels``); an axis named 'c',
'ch' or 'channel(s)' is taken as the channel axis, the other leading axes as frame
axes (T, Z, or both). The person may choose otherwise in the widget
(:func:`set_axes`, kept for the session, the layer is not changed). Frames of a
channel stack are one channel as gray, or two or three channels as red, green, blue
(:mod:`napari_sansa.core.channels`, the rule the command line follows too).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from napari_sansa.core import InvalidInputError
from napari_sansa.core.channels import MAX_CHANNELS, RGB, channel_image, describe_channels

__all__ = [
    "CHANNEL_NAMES",
    "MAX_CHANNELS",
    "RGB",
    "AxesChoice",
    "PromptError",
    "axes_choice",
    "declared_names",
    "describe_axes",
    "frame_image",
    "set_axes",
]


class PromptError(InvalidInputError):
    """A prompt layer cannot be used as it is; the message says what to change."""


#: axis labels taken as the channel axis (case-insensitive)
CHANNEL_NAMES = ("c", "ch", "channel", "channels")
_AXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class AxesChoice:
    """Which leading axis of an image holds its channels (None: none) and which of
    them make a frame; ``explicit``: chosen by the person (not guessed)."""

    channel_axis: int | None = None
    channels: tuple[int, ...] = (0,)
    explicit: bool = False


def declared_names(layer) -> tuple[str, ...]:
    """The names of the layer's leading axes, when the layer declares them (napari's
    default labels '-3', '-2', ... or '0', '1', ... declare nothing): else ()."""
    labels = tuple(str(a) for a in getattr(layer, "axis_labels", ()) or ())
    n = len(labels)
    defaults = {tuple(str(i - n) for i in range(n)), tuple(str(i) for i in range(n))}
    return () if labels in defaults or not labels else labels[:-2]


def set_axes(layer, channel_axis: int | None, channels=(0,)) -> None:
    """Choose the channel axis (among the leading axes; None: none) and the channels
    (one as gray, two or three as red, green, blue) of an image layer, for this session.
    The layer itself is not changed."""
    _AXES[layer] = AxesChoice(
        None if channel_axis is None else int(channel_axis),
        tuple(int(c) for c in channels),
        True,
    )


def axes_choice(layer, leading: tuple[int, ...]) -> AxesChoice:
    """The chosen axes of ``layer`` (set_axes), else those its axis labels declare."""
    try:
        chosen = _AXES.get(layer)
    except TypeError:  # not weak-referenceable (a stand-in in a test)
        chosen = None
    if chosen is not None and (chosen.channel_axis is None or chosen.channel_axis < len(leading)):
        return chosen
    names = declared_names(layer)
    for k, name in enumerate(names):
        if name.lower() in CHANNEL_NAMES and not getattr(layer, "rgb", False):
            return AxesChoice(k, (0,))
    return AxesChoice()


def describe_axes(geometry, channels: bool = True) -> str:
    """What the frames and (``channels``) the channels of an image are, in a sentence."""
    if not geometry.leading:
        return "a single image"
    axes = " x ".join(
        f"{geometry.axis_name(k)} ({geometry.leading[k]})" for k in geometry.frame_axes
    )
    text = f"{geometry.n_frames} frame(s): {axes}" if axes else "a single image"
    if geometry.channel_axis is not None and not channels:
        return text
    if geometry.channel_axis is not None:
        use = describe_channels(geometry.channels)
        text += f"; channels on {geometry.axis_name(geometry.channel_axis)}: {use}"
    elif len(geometry.leading) >= 2 and not geometry.axis_names:
        text += " (axes not named: every leading axis is taken as frames)"
    return text


def frame_image(block: np.ndarray, geometry) -> np.ndarray:
    """A frame read with a channel axis (channels first) -> gray (H, W) or (H, W, 3)
    (the rule of :func:`napari_sansa.core.channels.channel_image`)."""
    return channel_image(block, geometry.channels)
