"""The options of a segmentation run, checked once, before anything runs.

:class:`SegmentOptions` is the one public value of a run's options (as
:class:`~napari_sansa.core.models.settings.ModelSettings` is the model's): frozen, made
from keywords with one check, and with a stable text form (:meth:`SegmentOptions.record`)
that a dataset run records to resume. Every front end builds one and passes it on:
``SansaModel.segment_iter``, ``segment_dataset`` (inside a
:class:`~napari_sansa.dataset.settings.DatasetOptions`) and the napari widget's run
settings hold it instead of re-listing its fields. The defaults live here only.
:class:`RunOptions` is a run in progress as the runners see it: the options, and the
cancel poll of that one call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.fusion import check_threshold
from napari_sansa.core.images import DEFAULT_INPUT_SIZE, check_input_size, check_range
from napari_sansa.core.objects import ObjectOptions
from napari_sansa.core.prompts import Reference
from napari_sansa.core.tiling import TileSpec

__all__ = [
    "MODES",
    "RunOptions",
    "SegmentOptions",
    "check_references",
    "check_run_options",
    "check_targets",
]

MODES = ("independent", "sequential")


def check_batch_size(batch_size) -> int | None:
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise OptionError("batch_size", batch_size, "a whole number >= 1")
    return None if batch_size is None else int(batch_size)


def made(cls, options, keywords: dict):
    """An options value of dataclass ``cls`` from ``options`` (None, a ``cls`` or a
    mapping of its fields) with ``keywords`` replacing some fields; every value checked
    by ``cls`` itself (its ``__post_init__``)."""
    if options is None:
        return cls(**keywords)
    if isinstance(options, cls):
        return replace(options, **keywords) if keywords else options
    if isinstance(options, Mapping):
        return cls(**{**options, **keywords})
    raise InvalidInputError(
        f"options must be a {cls.__name__} (or a dict of its fields), got {type(options).__name__}"
    )


@dataclass(frozen=True)
class SegmentOptions:
    """How targets are segmented: the options of ``segment``, ``segment_iter``,
    ``segment_dataset``, the command line and the widget, in one checked value.

    ``mode``: ``"independent"`` (each target sees only the references) or
    ``"sequential"`` (targets in order, each also sees the previous ones).
    ``input_size``: the authors' intermediate square resize (default 640); None resizes
    straight to the model's input. ``threshold``: fuses the classes' probabilities into
    labels. ``intensity_range``: ``(low, high)`` mapped to [0, 1] for every image (None:
    each image's dtype rule). ``batch_size``: targets per batch in independent mode (None:
    measured on CUDA, 1 elsewhere). ``tile_size``: segment images larger than this by
    overlapping tiles (independent mode; None: whole images); ``halo``: context kept
    around each tile's own part (None: ``tile_size // 8``; the value holds it resolved).
    ``instances``: False/None, True, a dict of :class:`~napari_sansa.ObjectOptions`'
    fields or one: split each result into objects (held as an ObjectOptions or None).

    Made with keywords (``SegmentOptions(threshold=0.4)``) or :meth:`make`; every field
    is checked when the value is made (:class:`~napari_sansa.InvalidInputError`, an
    :class:`~napari_sansa.core.errors.OptionError` naming the option), so a value that
    exists is valid. ``dataclasses.replace`` checks again.
    """

    mode: str = "independent"
    input_size: int | None = DEFAULT_INPUT_SIZE
    threshold: float = 0.5
    intensity_range: tuple | None = None
    batch_size: int | None = None
    tile_size: int | None = None
    halo: int | None = None
    instances: ObjectOptions | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise OptionError("mode", self.mode, f"one of {', '.join(MODES)}")
        tiles = TileSpec.make(self.tile_size, self.halo)
        if tiles is not None and self.mode != "independent":
            raise OptionError(
                "tile_size",
                self.tile_size,
                "off unless {mode} is independent",
                fix="each tile is a target of its own, so tiles work in the independent mode only",
            )
        rng = self.intensity_range
        if rng is not None:  # kept as given (its record is), checked
            with contextlib.suppress(TypeError):
                rng = tuple(rng)
            check_range(rng)
        values = {
            "input_size": check_input_size(self.input_size),
            "threshold": check_threshold(self.threshold),
            "intensity_range": rng,
            "batch_size": check_batch_size(self.batch_size),
            "tile_size": None if tiles is None else tiles.tile_size,
            "halo": None if tiles is None else tiles.halo,
            "instances": ObjectOptions.make(self.instances),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def make(cls, options=None, **keywords) -> SegmentOptions:
        """``options`` (None, a SegmentOptions or a mapping of its fields) with
        ``keywords`` replacing some of its fields: the one check of a run's options."""
        return made(cls, options, keywords)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The fields' names (the keywords :meth:`make` takes)."""
        return tuple(f.name for f in fields(cls))

    @property
    def tiles(self) -> TileSpec | None:
        """The tiles (tile size and halo) of a tiled run; None: whole images."""
        return None if self.tile_size is None else TileSpec(self.tile_size, self.halo)

    def tiled(self, hw) -> bool:
        """Whether an image of ``hw`` (rows, cols) is cut into tiles by these options."""
        return self.tile_size is not None and max(hw) > self.tile_size

    @property
    def preprocessing(self) -> tuple:
        """What an image's features depend on besides its pixels (its resize and intensity
        range): equal values share features."""
        return (self.input_size, self.intensity_range)

    def record(self) -> dict:
        """The options the outputs depend on, as plain JSON values, in a stable order:
        what a dataset run records to resume (``batch_size`` is not in it). Tiles and
        objects appear only when on, and objects' ``refine`` only when set, so records
        written before these options existed are the same."""
        out = {
            "mode": self.mode,
            "threshold": self.threshold,
            "input_size": self.input_size,
            "intensity_range": list(self.intensity_range) if self.intensity_range else None,
        }
        if self.tiles is not None:
            out["tiles"] = [self.tile_size, self.halo]
        if self.instances is not None:
            out["instances"] = self.instances.record()
        return out


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RunOptions:
    mode: str
    input_size: int | None
    threshold: float
    intensity_range: tuple | None
    batch_size: int | None  # None: chosen from free device memory
    cancelled: Callable[[], bool] = _never  # polled between steps: True stops the run

    @property
    def cancellable(self) -> bool:
        return self.cancelled is not _never

    @classmethod
    def of(cls, options: SegmentOptions, cancel=None) -> RunOptions:
        """The run of one call with checked ``options`` and its ``cancel``."""
        return cls(
            options.mode,
            options.input_size,
            options.threshold,
            None if options.intensity_range is None else check_range(options.intensity_range),
            options.batch_size,
            check_cancel(cancel),
        )


def check_cancel(cancel) -> Callable[[], bool]:
    """``cancel``: None, a ``threading.Event`` (or anything with ``is_set()``) or a
    callable returning True once the run should stop -> a callable."""
    if cancel is None:
        return _never
    is_set = getattr(cancel, "is_set", None)
    if callable(is_set):
        return is_set
    if callable(cancel):
        return cancel
    raise InvalidInputError(
        f"cancel must be a threading.Event or a callable returning True to stop, got {cancel!r}"
    )


def check_run_options(
    mode, input_size, threshold, intensity_range, batch_size, cancel=None
) -> RunOptions:
    options = SegmentOptions(
        mode=mode,
        input_size=input_size,
        threshold=threshold,
        intensity_range=intensity_range,
        batch_size=batch_size,
    )
    return RunOptions.of(options, cancel)


def check_references(references) -> list[Reference]:
    if isinstance(references, Reference):
        references = [references]
    if references is None or isinstance(references, (str, bytes)):
        references = []
    try:
        refs = list(references)
    except TypeError:
        raise InvalidInputError(
            "references must be a list of napari_sansa.Reference objects"
        ) from None
    if not refs:
        raise InvalidInputError(
            "no references: give at least one napari_sansa.Reference (an image with a mask, "
            "points, a box or a scribble on the objects to find)"
        )
    for i, r in enumerate(refs):
        if not isinstance(r, Reference):
            raise InvalidInputError(
                f"reference {i} is a {type(r).__name__}, not a napari_sansa.Reference; "
                "wrap it as Reference(image, [Mask(...), Points(...), ...])"
            )
    return refs


def check_targets(targets) -> None:
    if targets is None or isinstance(targets, (str, bytes)):
        raise InvalidInputError("targets must be a list (or a stack) of images")
    ndim = getattr(targets, "ndim", None)
    shape = getattr(targets, "shape", None)
    if ndim == 2 or (ndim == 3 and shape[-1] in (2, 3, 4)):
        raise InvalidInputError(
            f"targets has shape {tuple(shape)}, which looks like a single image: pass a list "
            "of images, e.g. targets=[image]"
        )
    if not isinstance(targets, Iterable):
        raise InvalidInputError("targets must be a list (or a stack) of images")
