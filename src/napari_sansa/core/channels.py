"""Channels of an image -> the image a frame is made of: one channel as gray, two or
three as red, green, blue (numpy only). The widget (napari/axes.py) and the dataset
runner (dataset/io.py) both follow this rule."""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = ["MAX_CHANNELS", "RGB", "channel_image", "check_channels", "describe_channels"]

#: a declared channel axis longer than this is not taken without being asked for
MAX_CHANNELS = 16
RGB = ("red", "green", "blue")


def check_channels(channels, size: int, what: str, how: str = "") -> tuple[int, ...]:
    """``channels`` as a tuple of indices into a channel axis of ``size`` channels;
    an error naming ``what`` (the image, its axis) and ``how`` they are chosen (a
    flag, a keyword) when they cannot be used."""
    try:
        chosen = tuple(int(c) for c in channels)
    except (TypeError, ValueError):
        chosen = ()
    bad = [c for c in chosen if not 0 <= c < size]
    if bad or not 1 <= len(chosen) <= 3:
        raise InvalidInputError(
            f"{what} has channels 0..{size - 1}: choose one channel (as gray), or up to three "
            f"as red, green and blue{' with ' + how if how else ''} (not "
            f"{list(channels) if chosen else channels!r})"
        )
    return chosen


def describe_channels(channels) -> str:
    """``(0,)`` -> "channel 0 as gray"; ``(2, 0)`` -> "channels 2 as red, 0 as green"."""
    ch = tuple(channels)
    if len(ch) == 1:
        return f"channel {ch[0]} as gray"
    return "channels " + ", ".join(f"{c} as {colour}" for c, colour in zip(ch, RGB, strict=False))


def channel_image(block: np.ndarray, channels) -> np.ndarray:
    """A frame read with its channels first -> gray (H, W) for one channel, (H, W, 3)
    for two or three (a missing blue is zeros)."""
    ch = tuple(channels)
    if len(ch) == 1:
        return np.asarray(block[ch[0]])
    planes = [np.asarray(block[c]) for c in ch]
    while len(planes) < 3:
        planes.append(np.zeros_like(planes[0]))
    return np.stack(planes, axis=-1)
