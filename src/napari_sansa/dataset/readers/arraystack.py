"""An image of any format held as an N-d array read window by window (a zarr array, a
dask array), laid out as :class:`~napari_sansa.dataset.tiffstack.TiffStack` lays out a
TIFF: T and Z index frames, C holds channels (``channels`` make each frame), Y, X are
rows and columns, S colour samples (no napari, no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_sansa.core.channels import channel_image
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.tiffstack import IMAGE_AXES, TiffStack

__all__ = ["ArrayStack", "FrameWindows"]


class _ArrayFrames:
    """The frames of an N-d array whose last axes are Y, X (and S): the others, in C
    order, index its frames (channels counted as frames, as TiffStack's raw frames)."""

    def __init__(self, array, axes: str, path: Path, check=None):
        shape = tuple(int(n) for n in array.shape)
        n_lead = len(axes) - sum(a in IMAGE_AXES for a in axes)
        if axes[n_lead:] not in ("YX", "YXS") or len(axes) != len(shape):
            raise InvalidInputError(
                f"{path} has axes {axes}: napari-sansa reads images whose last axes are its "
                "rows and columns (Y, X, then colour samples S, if any); save it so"
            )
        self.array, self.check, self.path = array, check, path
        self.axes = axes
        self.lead_axes = axes[:n_lead]
        self.lead_sizes = shape[:n_lead]
        self.image_axes = axes[n_lead:]
        self.frame_shape = shape[n_lead:]
        self.n = int(math.prod(self.lead_sizes))
        self.dtype = np.dtype(array.dtype)

    def block(self, j: int, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """Raw frame ``j`` (C order over the lead axes), rows ``rows``, columns ``cols``."""
        where = tuple(int(k) for k in np.unravel_index(int(j), self.lead_sizes))
        key = (*where, rows, cols)
        if self.check is not None:
            self.check(key)
        part = self.array[key]
        if hasattr(part, "compute"):  # a dask array: read here, in this thread
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)

    def frame(self, j: int) -> np.ndarray:
        return self.block(j)

    def close(self) -> None:
        pass


class ArrayStack(TiffStack):
    """An image read from an N-d array, frame by frame or window by window.

    ``recorded_axes``: one letter per axis of ``array`` (as its metadata says: T, Z, C,
    Y, X, S; Q for an axis of unknown meaning), rows and columns last. ``axes`` and
    ``channels`` override and choose as for a TIFF (:class:`TiffStack`: the same rules
    and messages). ``channel_names``: the names of the C axis's channels (or None);
    ``pixel_sizes``: ``{axis letter: size in micrometres}`` of the axes whose size is
    known (e.g. ``{"Z": 2.0, "Y": 0.5, "X": 0.5}``); ``format``: the format's name, for
    messages; ``check(key)``: called before each read of ``array[key]`` (e.g. to notice
    absent chunks); ``close()``: called when the stack is closed.
    """

    def __init__(
        self,
        path,
        array,
        recorded_axes: str,
        axes=None,
        channels=None,
        *,
        axes_tail=False,
        channel_names=None,
        pixel_sizes=None,
        format: str = "image",  # noqa: A002 - the word the docs use
        check=None,
        close=None,
    ):
        self.path = Path(path)
        self.format = format
        self.channel_names = None if channel_names is None else [str(c) for c in channel_names]
        self.pixel_sizes = dict(pixel_sizes or {})
        self._closer = close
        part = _ArrayFrames(array, recorded_axes, self.path, check)
        self._parts = [part]
        try:
            self._layout([part], part.frame_shape, axes, channels, axes_tail)
        except InvalidInputError:
            self.close()
            raise
        self.dtype = part.dtype
        self.n_frames = int(math.prod(self.frame_sizes))
        self.shape = (self.n_frames, *self.frame_shape)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(i)
        return self.read_window(i, slice(None), slice(None))

    def read_window(self, i: int, rows: slice, cols: slice) -> np.ndarray:
        """Rows ``rows`` and columns ``cols`` of frame ``i``, made of its channels."""
        part = self._parts[0]
        try:
            if self._channel_axis is None:
                return part.block(i, rows, cols)
            at = list(self.index(i)) if self.frame_sizes else []
            planes = []
            for c in self.channels:
                where = [*at[: self._channel_axis], c, *at[self._channel_axis :]]
                raw = int(np.ravel_multi_index(where, self._raw_sizes))
                planes.append(part.block(raw, rows, cols))
            return channel_image(planes, range(len(planes)))
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - readers raise many types for bad data
            what = "it" if self.n_frames == 1 else f"frame {i} of it"
            raise InvalidInputError(
                f"{self.path} ({self.format}): {what} cannot be read ({type(exc).__name__}: "
                f"{str(exc).strip()[:200]}); it may be damaged or incomplete: check it, "
                "replace it or remove it from the input"
            ) from None

    def window(self, i: int = 0) -> FrameWindows:
        """Frame ``i`` as an array read window by window (runs by tiles)."""
        return FrameWindows(self, i)

    def describe_channels(self) -> str:
        """The names of the channels chosen (for messages), or ""."""
        if self.channels is None or not self.channel_names:
            return ""
        names = [
            self.channel_names[c] if c < len(self.channel_names) else str(c) for c in self.channels
        ]
        return ", ".join(f"{c} ({n})" for c, n in zip(self.channels, names, strict=True))

    def close(self) -> None:
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()


class FrameWindows:
    """One frame of an :class:`ArrayStack` read window by window: ``image[rows, cols]``
    reads just those pixels (of the channels that make the frame), as a new array;
    ``shape`` and ``dtype`` are the frame's (what :class:`~napari_sansa.core.tiling.
    TiledImage` reads tile by tile)."""

    def __init__(self, stack: ArrayStack, i: int = 0):
        self.stack, self.i = stack, int(i)
        self.shape = tuple(int(n) for n in stack.frame_shape)
        self.dtype = np.dtype(stack.dtype)
        self.ndim = len(self.shape)
        self.path = stack.path

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key and key[-1] is Ellipsis:
            key = key[:-1]
        if len(key) > self.ndim or not all(isinstance(k, slice) for k in key):
            return np.asarray(self)[key]
        rows = key[0] if key else slice(None)
        cols = key[1] if len(key) > 1 else slice(None)
        data = self.stack.read_window(self.i, rows, cols)
        return data[(slice(None), slice(None), *key[2:])] if len(key) > 2 else data

    def __array__(self, dtype=None, copy=None):
        arr = self.stack.read_window(self.i, slice(None), slice(None))
        return arr if dtype is None else arr.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameWindows({self.path.name}, frame {self.i}, shape={self.shape})"
