"""A dataset run's options (:class:`DatasetOptions`), its settings as the workers need
them (:class:`RunSettings`), and the one call into the engine."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.options import SegmentOptions

__all__ = ["DatasetOptions", "RunSettings", "predictions"]


@dataclass(frozen=True)
class DatasetOptions:
    """The options of :func:`~napari_sansa.dataset.segment_dataset`: the core's
    :class:`~napari_sansa.SegmentOptions` (``segment``) and what only a run over files has.

    ``probabilities``: also write per-class probability TIFFs. ``axes``: the axes of TIFF
    targets that record none, e.g. "TCYX" (None: from their metadata). ``channels``: the
    channels of a channel axis that make a frame (one as gray, two or three as red, green,
    blue; a sequence or a string such as "2,0,1"; None: the first). ``sequential_axis``:
    "T" or "Z", the axis a sequential run goes along, restarted at each index of the others
    (None: the last frame axis). ``chunk_size``: targets per Dask task (None: up to
    :data:`~napari_sansa.dataset.distributed.CHUNK_SIZE`, fewer where that keeps every
    worker thread of the cluster busy). ``tracks``: link
    the objects of every time-lapse (a stack with a T axis) into tracks
    (:mod:`~napari_sansa.dataset.tracks`); it implies objects (``instances``: their
    defaults when not given). ``follow``: link them on where SAM2 carries each object
    into the next frame (:func:`~napari_sansa.propagate_objects`), on the features the
    run computed, kept in the stack's scratch folder until its tracks are written (no
    second encoding); it implies ``tracks``, and needs whole frames (no ``tile_size``).
    ``max_move``: with ``tracks``, the farthest a cell moves between two frames (pixels;
    with a voxel size, a T x Z stack's in its units; None: the linker's own, 1.5 times the
    median diameter of the objects), and with ``follow`` of a (T, Y, X) stack also how far
    an object's carried mask may reach (None: three times its diameter).
    ``format``: the outputs' file format, "tiff" (the default)
    or "ome-zarr" (one OME-Zarr store per output; see
    :mod:`napari_sansa.dataset.outputs.omezarr`). ``into_input_store``: with "ome-zarr",
    also add each target's labels to the target's own OME-Zarr image store, as a new
    ``labels/sansa`` group (nothing there is changed; refused if it has one).

    Made with :meth:`make` from a SegmentOptions, a DatasetOptions or keywords of both
    (``DatasetOptions.make(mode="sequential", probabilities=True)``); checked when made.
    :meth:`record` is its stable text form, recorded by the run to resume.
    """

    segment: SegmentOptions = field(default_factory=SegmentOptions)
    probabilities: bool = False
    axes: str | None = None
    channels: tuple | None = None
    sequential_axis: str | None = None
    chunk_size: int | None = None
    tracks: bool = False
    follow: bool = False
    max_move: float | None = None
    format: str = "tiff"
    into_input_store: bool = False

    def __post_init__(self):
        if not isinstance(self.segment, SegmentOptions):
            raise InvalidInputError(
                f"segment must be a SegmentOptions, got {type(self.segment).__name__}"
            )
        layout = _check_layout(self.axes, self.channels, self.segment.mode, self.sequential_axis)
        chunk = self.chunk_size
        if chunk is not None and (
            isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1
        ):
            raise OptionError("chunk_size", chunk, "a whole number >= 1")
        object.__setattr__(self, "probabilities", bool(self.probabilities))
        if not isinstance(self.tracks, (bool, int)) or self.tracks not in (0, 1):
            raise OptionError("tracks", self.tracks, "True or False")
        if not isinstance(self.follow, (bool, int)) or self.follow not in (0, 1):
            raise OptionError("follow", self.follow, "True or False")
        object.__setattr__(self, "follow", bool(self.follow))
        if self.follow and self.segment.tile_size is not None:
            raise OptionError(
                "follow",
                True,
                template="following objects with SAM2 ({follow}) carries them on whole "
                "frames: leave out {tile_size}, or link tracks by overlap",
                also=("tile_size",),
            )
        object.__setattr__(self, "tracks", bool(self.tracks) or self.follow)
        move = self.max_move
        if move is not None:
            if (
                isinstance(move, bool)
                or not isinstance(move, numbers.Real)
                or not (0 < float(move) < float("inf"))
            ):
                raise OptionError("max_move", move, "a distance in pixels above 0")
            if not self.tracks:
                raise OptionError("max_move", move, "given only with {tracks}")
            object.__setattr__(self, "max_move", float(move))
        if self.tracks and self.segment.instances is None:  # tracks link objects
            from napari_sansa.core.objects import ObjectOptions

            object.__setattr__(self, "segment", replace(self.segment, instances=ObjectOptions()))
        object.__setattr__(self, "format", _check_format(self.format))
        object.__setattr__(self, "into_input_store", bool(self.into_input_store))
        if self.into_input_store and self.format != "ome-zarr":
            raise OptionError("into_input_store", True, "given only with {format} ome-zarr")
        for name, value in zip(("axes", "channels", "sequential_axis"), layout, strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def make(cls, options=None, **keywords) -> DatasetOptions:
        """``options`` (None, a DatasetOptions, a SegmentOptions, or a mapping of fields of
        either) with ``keywords`` (fields of either) replacing some of its fields."""
        if isinstance(options, Mapping):
            options, keywords = None, {**options, **keywords}
        own = {f.name for f in fields(cls)} - {"segment"}
        mine = {k: keywords.pop(k) for k in list(keywords) if k in own}
        if options is None or isinstance(options, SegmentOptions):
            base = cls(segment=SegmentOptions.make(options, **keywords), **mine)
            return base
        if not isinstance(options, cls):
            raise InvalidInputError(
                f"options must be a DatasetOptions or a SegmentOptions (or a dict of their "
                f"fields), got {type(options).__name__}"
            )
        if keywords:
            mine["segment"] = SegmentOptions.make(options.segment, **keywords)
        return replace(options, **mine) if mine else options

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The keywords :meth:`make` takes: this value's fields and the SegmentOptions'."""
        own = tuple(f.name for f in fields(cls) if f.name != "segment")
        return SegmentOptions.names() + own

    def record(self) -> dict:
        """The options the outputs depend on, as plain JSON values in a stable order: the
        segmentation's (:meth:`SegmentOptions.record`), then the axes, channels and
        sequential axis when given (so that runs without them keep their record), and the
        format when it is not TIFF."""
        layout = {"axes": self.axes, "channels": self.channels}
        layout["sequential_axis"] = self.sequential_axis
        if self.format != "tiff":
            layout["format"] = self.format
        record = {**self.segment.record(), **{k: v for k, v in layout.items() if v is not None}}
        if self.tracks:  # runs without tracks keep their record
            record["tracks"] = True
        if self.follow:
            record["follow"] = True
        if self.max_move is not None:
            record["max_move"] = self.max_move
        return record

    @property
    def suffix(self) -> str:
        """The suffix of the outputs of :attr:`format` (".tif", ".ome.zarr")."""
        from napari_sansa.dataset.outputs import FORMATS

        return FORMATS[self.format].suffix


def _check_format(value) -> str:
    """``format`` as one of the output formats' names."""
    from napari_sansa.dataset.outputs import FORMATS

    text = value.strip().lower().replace("_", "-") if isinstance(value, str) else ""
    text = {"tif": "tiff", "omezarr": "ome-zarr", "zarr": "ome-zarr"}.get(text, text)
    if text not in FORMATS:
        raise OptionError("format", value, " or ".join(FORMATS))
    if text == "ome-zarr":
        import importlib.util

        if importlib.util.find_spec("zarr") is None:
            raise InvalidInputError(
                "OME-Zarr outputs need the zarr package: pip install 'napari-sansa[ome-zarr]'"
            )
    return text


def _check_layout(axes, channels, mode: str, sequential_axis):
    """``(axes, channels, sequential_axis)`` of a run, checked: ``axes`` a string of axis
    letters ("TCYX"), ``channels`` one to three channel indices (a sequence, or a string
    such as "2,0,1"), ``sequential_axis`` "T" or "Z" with ``mode="sequential"``."""
    if axes is not None:
        text = str(axes).strip().upper()
        if not text.isalpha() or len(set(text)) != len(text) or not {"Y", "X"} <= set(text):
            raise OptionError(
                "axes",
                axes,
                "one letter per axis of the TIFFs, each once, with Y and X (rows, columns): "
                "T, Z (frames), C (channels), S (colour samples), e.g. TCYX or TZCYX",
            )
        axes = text
    if channels is not None:
        parts = channels.split(",") if isinstance(channels, str) else channels
        try:
            chosen = tuple(int(str(c).strip()) for c in parts)
        except (TypeError, ValueError):
            chosen = ()
        if not 1 <= len(chosen) <= 3 or min(chosen) < 0:
            raise OptionError(
                "channels",
                channels,
                "one channel index (as gray), or up to three as red, green and blue, e.g. 0 "
                "or 2,0,1",
            )
        channels = chosen
    if sequential_axis is not None:
        along = str(sequential_axis).strip().upper()
        if along not in ("T", "Z"):
            raise OptionError("sequential_axis", sequential_axis, "T or Z")
        if mode != "sequential":
            raise OptionError(
                "sequential_axis", sequential_axis, "given only when {mode} is sequential"
            )
        sequential_axis = along
    return axes, channels, sequential_axis


@dataclass(frozen=True)
class RunSettings:
    """A run's options as its workers need them, with what the run found out: the
    signature its outputs record and whether the references are colour images."""

    options: DatasetOptions = field(default_factory=DatasetOptions)
    signature: str = ""
    reference_colour: bool | None = None  # the references are all RGB / all gray; None: mixed
    #: polled by the model between steps (``segment_iter(cancel=...)``): True ends the
    #: predictions early; not part of the run's identity, never sent to Dask workers
    cancel: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    @property
    def segment(self) -> SegmentOptions:
        return self.options.segment

    @property
    def mode(self) -> str:
        return self.options.segment.mode

    @property
    def instances(self):
        """The ObjectOptions of a run with object outputs; None without."""
        return self.options.segment.instances

    @property
    def probabilities(self) -> bool:
        return self.options.probabilities

    @property
    def tracks(self) -> bool:
        """Whether the run links the objects of time-lapses into tracks."""
        return self.options.tracks

    @property
    def follow(self) -> bool:
        """Whether tracks are linked on where SAM2 carries each object."""
        return self.options.follow

    @property
    def max_move(self) -> float | None:
        """The farthest a cell moves between two frames (None: the linker's own)."""
        return self.options.max_move

    @property
    def axes(self) -> str | None:
        return self.options.axes

    @property
    def channels(self) -> tuple | None:
        return self.options.channels

    @property
    def sequential_axis(self) -> str | None:
        return self.options.sequential_axis


def predictions(model, memory, frames, run: RunSettings):
    """The model's predictions of ``frames`` with the run's settings."""
    return model.segment_iter(memory, frames, run.segment, cancel=run.cancel)
