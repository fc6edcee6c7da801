"""TIFF stacks read frame by frame, with their axes (T, Z frames; C channels) and the
channels that make a frame (no napari, no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_sansa.core.channels import MAX_CHANNELS, channel_image, check_channels
from napari_sansa.core.errors import InvalidInputError

__all__ = ["FRAME_AXES", "IMAGE_AXES", "TiffStack"]


#: axis letters napari-sansa knows (tifffile's vocabulary): T time, Z depth, C channels,
#: Y rows, X columns, S colour samples; any other letter (tifffile's Q and I: "unknown",
#: "image sequence") is an axis of unknown meaning
FRAME_AXES = "TZ"
IMAGE_AXES = "YXS"


class TiffStack:
    """A multi-page TIFF read lazily, one 2D (or RGB) frame at a time.

    Its axes are those tifffile reads from its metadata (ImageJ hyperstacks, OME,
    napari-sansa's and tifffile's shaped JSON), or ``axes`` (e.g. ``"TCYX"``, one
    letter per axis of the file's series) for files that record none. T and Z (and at
    most one axis of unknown meaning, as tifffile's Q or I) index frames, numbered in C
    order over them (:meth:`index`); C holds channels, of which ``channels`` make each
    frame (default: the first, as gray; two or three: red, green, blue, see
    :mod:`napari_sansa.core.channels`); colour samples come last in every frame (planar
    RGB is reordered). A file of more than one axis of unknown meaning is refused
    (say which is which with ``axes``). A file of several series (tifffile makes one
    per page when a writer wrote the pages one at a time) is the stack of all their
    frames, in file order, on one axis I; frames of different sizes are refused, never
    dropped. Reduced-resolution copies (thumbnails) are not frames.
    """

    def __init__(self, path, axes: str | None = None, channels=None, *, axes_tail=False):
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
            raise InvalidInputError(unreadable_reason(self.path, exc)) from None
        try:
            parts = _frame_series(self._tif, self.path)
            if not parts:
                raise InvalidInputError(f"{self.path} is not a readable image (it holds no image)")
            shapes = list(dict.fromkeys(p.frame_shape for p in parts))
            if len(shapes) > 1:
                sizes = ", ".join("x".join(str(n) for n in s) for s in shapes)
                raise InvalidInputError(
                    f"{self.path} holds pages of different sizes ({sizes}): a multi-page TIFF "
                    "is read as one stack of equally sized frames; save its pages as separate "
                    "files (one image per file) and give those instead"
                )
            self._parts = parts
            self._layout(parts, shapes[0], axes, channels, axes_tail)
        except Exception as exc:  # noqa: BLE001
            self._tif.close()
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(unreadable_reason(self.path, exc)) from None
        self.dtype = parts[0].dtype
        self.n_frames = int(math.prod(self.frame_sizes))
        self.shape = (self.n_frames, *self.frame_shape)

    def _layout(self, parts, raw_shape, axes, channels, axes_tail) -> None:
        """The stack's axes, frame axes and channels, checked (see the class).
        A file of one image (rows, columns, samples) keeps its own axes; with
        ``axes_tail``, ``axes`` may be longer than the file's, whose axes are then its
        last letters (a reference image of the targets' channels: CYX of TCYX)."""
        first = parts[0]
        if len(parts) == 1:
            file_axes, lead_sizes = first.axes, first.lead_sizes
        elif len({p.lead_sizes for p in parts}) == 1 and set(first.lead_axes) <= set("TZC"):
            lead_sizes = (len(parts), *first.lead_sizes)
            file_axes = "I" + first.axes
        else:  # series of different frame layouts: all their frames, in file order
            lead_sizes = (sum(p.n for p in parts),)
            file_axes = "I" + first.image_axes
        recorded = file_axes
        if axes is not None and set(recorded) <= set(IMAGE_AXES):
            axes = None  # one image (rows, columns, samples) keeps its own axes
        elif axes is not None and axes_tail:
            axes = str(axes)[-len(recorded) :]
        if axes is not None:
            file_axes = _given_axes(axes, recorded, self.path)
        lead = "".join(a for a in file_axes if a not in IMAGE_AXES)
        self.axes = file_axes  # of the file, e.g. "TZCYX"
        self.recorded_axes = recorded
        self._raw_sizes = lead_sizes
        unknown = [a for a in lead if a not in FRAME_AXES + "C"]
        shape = "x".join(map(str, (*lead_sizes, *raw_shape)))
        if len(unknown) > 1:
            example = {2: "TC", 3: "TZC"}.get(len(lead), "TZC")[: len(lead)]
            raise InvalidInputError(
                f"{self.path} ({shape}, axes {recorded}) has {len(lead)} axes before its rows "
                f"and columns and its metadata does not say what they are: say which are "
                "frames (T, Z) and which holds channels (C) with --axes (axes= in Python), "
                f"one letter per axis, e.g. --axes {example}{first.image_axes}"
            )
        self._channel_axis = lead.index("C") if "C" in lead else None
        self.frame_axes = "".join(a for a in lead if a != "C")
        self.frame_sizes = tuple(n for a, n in zip(lead, lead_sizes, strict=True) if a != "C")
        self.n_channels = None if self._channel_axis is None else lead_sizes[self._channel_axis]
        self.channels = None
        self.frame_shape = raw_shape
        if self._channel_axis is None:
            if channels is not None and lead:
                raise InvalidInputError(
                    f"{self.path} ({shape}, axes {self.axes}) has no channel axis, but "
                    f"channels {list(channels)} were chosen: if it has channels, name their "
                    f"axis C with --axes (e.g. --axes {'C' + self.axes[1:]}); else leave "
                    "--channels out"
                )
            return
        if "S" in file_axes:
            raise InvalidInputError(
                f"{self.path} ({shape}, axes {self.axes}) has both colour samples (S) and a "
                "channel axis (C): save it as either, or give --axes without C"
            )
        size = self.n_channels
        if axes is None and size > MAX_CHANNELS:
            raise InvalidInputError(
                f"{self.path} declares its axis {lead.index('C')} ({size} long) as channels, "
                f"more than {MAX_CHANNELS}: if that is not where its channels are, give its "
                f"axes with --axes (axes= in Python), e.g. --axes {_without_c(self.axes)}"
            )
        self.channels = check_channels(
            (0,) if channels is None else channels,
            size,
            f"{self.path} (axis C of {self.axes})",
            "--channels (channels= in Python)",
        )
        self.frame_shape = (*raw_shape[:2], 3) if len(self.channels) > 1 else raw_shape[:2]

    @property
    def label_axes(self) -> str:
        """The axes of a label stack of this stack: its frame axes, then Y and X."""
        return self.frame_axes + "YX"

    def index(self, i: int) -> tuple[int, ...]:
        """Frame ``i``'s index on each frame axis (:attr:`frame_axes`)."""
        return tuple(int(k) for k in np.unravel_index(int(i), self.frame_sizes))

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(i)
        try:
            if self._channel_axis is None:
                return self._raw(i)
            at = list(self.index(i)) if self.frame_sizes else []
            planes = []
            for c in self.channels:
                where = [*at[: self._channel_axis], c, *at[self._channel_axis :]]
                planes.append(self._raw(int(np.ravel_multi_index(where, self._raw_sizes))))
            return channel_image(planes, range(len(planes)))
        except Exception as exc:  # noqa: BLE001
            if self.n_frames == 1:
                raise InvalidInputError(unreadable_reason(self.path, exc)) from None
            raise InvalidInputError(
                f"frame {i} of {self.path} cannot be read ({type(exc).__name__}: {exc}); the "
                "file may be damaged or incomplete"
            ) from None

    def _raw(self, j: int) -> np.ndarray:
        """Frame ``j`` of the file (channels counted as frames), over all its series."""
        for part in self._parts:
            if j < part.n:
                break
            j -= part.n
        return part.frame(j)

    def __iter__(self):
        for i in range(self.n_frames):
            yield self[i]

    def close(self) -> None:
        self._tif.close()
        for part in self._parts:
            part.close()

    def __enter__(self) -> TiffStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _without_c(axes: str) -> str:
    """``axes`` with its C renamed as a frame axis it does not have (for messages)."""
    spare = next((a for a in "ZTQ" if a not in axes), "Q")
    return axes.replace("C", spare)


def _given_axes(axes, recorded: str, path: Path) -> str:
    """``axes`` given for a file whose series has axes ``recorded``, checked."""
    given = str(axes).strip().upper()
    ok = given.isalpha() and len(set(given)) == len(given)
    if not ok or len(given) != len(recorded):
        raise InvalidInputError(
            f"--axes {axes!r} does not fit {path}: its image has {len(recorded)} axes "
            f"(recorded as {recorded}), so give {len(recorded)} different letters, one per "
            f"axis, such as T, Z (frames), C (channels), Y, X (rows, columns)"
            + (", S (colour samples)" if "S" in recorded else "")
        )
    for k, a in enumerate(recorded):
        if (a in IMAGE_AXES) != (given[k] in IMAGE_AXES) or (a in IMAGE_AXES and given[k] != a):
            raise InvalidInputError(
                f"--axes {given} does not fit {path}: its rows, columns (and colour samples) "
                f"are where {recorded} has Y, X (and S), and --axes must keep them there; "
                "only the other letters can be named"
            )
    return given


class _SeriesFrames:
    """The frames of one tifffile series: frame axes first, then rows, columns, samples.

    A frame is read on its own: from its page when every frame is a page, else from a
    read-only memory map of the file when the series is stored contiguous and
    uncompressed (ImageJ hyperstacks, volumes in one page). Only a compressed series
    whose pages each hold several frames is decoded whole, once (its pages are not
    divisible into frames).
    """

    def __init__(self, series, path: Path, index: int):
        axes, shape = series.axes, tuple(int(n) for n in series.shape)
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"a series of axes {axes!r} has no rows and columns")
        self.series = series
        self.path, self.index = path, index
        self.dtype = series.dtype
        self.frame_axes = [k for k, a in enumerate(axes) if a not in "YXS"]
        image_axes = [axes.index(a) for a in "YXS" if a in axes]
        self.order = self.frame_axes + image_axes
        # the image axes as they remain after indexing the frame axes, put in YXS order
        remaining = sorted(image_axes)
        self.image_order = [remaining.index(k) for k in image_axes]
        self.shape = shape
        self.axes = axes
        self.lead_axes = "".join(axes[k] for k in self.frame_axes)
        self.lead_sizes = tuple(shape[k] for k in self.frame_axes)
        self.image_axes = "".join(a for a in axes if a in "YXS")
        self.frame_shape = tuple(shape[k] for k in image_axes)
        self.n = int(math.prod(shape[k] for k in self.frame_axes))
        self.by_page = len(series.pages) == self.n
        self._map = None
        self._whole = None

    def frame(self, j: int) -> np.ndarray:
        if self.by_page:
            page = self.series.pages[j]
            arr = page.asarray()
            pax = getattr(page, "axes", "")
            planar = "S" in pax and "Y" in pax and pax.index("S") < pax.index("Y")
            if planar and arr.ndim == len(pax):
                arr = np.moveaxis(arr, pax.index("S"), -1)  # planar RGB: samples last
            return arr.reshape(self.frame_shape)
        if self._map is None and self._whole is None:
            if self.series.dataoffset is not None:  # contiguous, uncompressed
                import tifffile

                self._map = tifffile.memmap(self.path, series=self.index, mode="r")
            else:
                data = np.transpose(self.series.asarray(), self.order)
                self._whole = data.reshape(self.n, *self.frame_shape)
        if self._whole is not None:
            return self._whole[j]
        where = np.unravel_index(j, [self.shape[k] for k in self.frame_axes])
        index = [slice(None)] * len(self.shape)
        for k, i in zip(self.frame_axes, where, strict=True):
            index[k] = int(i)
        return np.array(self._map[tuple(index)].transpose(self.image_order))

    def close(self) -> None:
        self._map = self._whole = None  # a memory map closes with its last reference


def _frame_series(tif, path: Path) -> list[_SeriesFrames]:
    series = list(enumerate(tif.series))
    full = [(i, s) for i, s in series if not getattr(s.keyframe, "is_reduced", False)]
    return [_SeriesFrames(s, path, i) for i, s in (full or series)]


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why ``path`` is not a readable image, in words, from a reader's exception."""
    text = str(exc).strip()
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if type(exc).__name__ == "DecompressionBombError":  # PIL's limit on pixels read whole
        return (
            f"{path} is too large to read whole ({text.split(',')[0]}; PIL refuses it as a "
            "possible decompression bomb): save it as a TIFF, which is read window by window "
            "with --tile-size (tile_size= in Python), or crop or downscale it"
        )
    if empty:
        reason = "the file is empty, 0 bytes"
    elif "Could not find a backend" in text or "cannot identify image file" in text:
        reason = f"its contents are not {path.suffix.lstrip('.').upper()} image data"
    elif "not a tiff file" in text.lower():
        reason = "its contents are not TIFF image data"
    else:
        first = text.splitlines()[0] if text else ""
        reason = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    return (
        f"{path} is not a readable image ({reason}); it may be damaged, incomplete or not an "
        "image: check the file, replace it or remove it from the input"
    )
