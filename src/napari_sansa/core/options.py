"""The settings of one ``segment`` call, checked before anything runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.fusion import check_threshold
from napari_sansa.core.images import check_range
from napari_sansa.core.preprocess import check_input_size
from napari_sansa.core.prompts import Reference

__all__ = ["MODES", "RunOptions", "check_references", "check_run_options", "check_targets"]

MODES = ("independent", "sequential")


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
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if intensity_range is not None:
        intensity_range = check_range(intensity_range)
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise InvalidInputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return RunOptions(
        mode,
        check_input_size(input_size),
        check_threshold(threshold),
        intensity_range,
        None if batch_size is None else int(batch_size),
        check_cancel(cancel),
    )


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
