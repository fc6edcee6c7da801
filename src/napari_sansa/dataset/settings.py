"""A run's settings as its workers need them, and the one call into the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunSettings:
    mode: str = "independent"
    threshold: float = 0.5
    input_size: int | None = 640
    intensity_range: tuple | None = None
    probabilities: bool = False
    batch_size: int | None = None
    signature: str = ""
    tile_size: int | None = None  # tiles (napari_sansa.core.tiling); None: untiled
    halo: int | None = None
    objects: object = None  # an ObjectOptions (--instances); None: no object outputs
    axes: str | None = None  # the axes of TIFF targets (--axes); None: from their metadata
    channels: tuple | None = None  # the channels making a frame (--channels); None: (0,)
    sequential_axis: str | None = None  # sequential mode along T or Z; None: the last
    reference_colour: bool | None = None  # the references are all RGB / all gray; None: mixed
    #: polled by the model between steps (``segment_iter(cancel=...)``): True ends the
    #: predictions early; not part of the run's identity, never sent to Dask workers
    cancel: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


def reference_options(run: RunSettings) -> dict:
    """``prepare_references``'s keyword arguments for the run's settings."""
    return {
        "input_size": run.input_size,
        "intensity_range": run.intensity_range,
        "threshold": run.threshold,
        "tile_size": run.tile_size,
        "halo": run.halo,
    }


def predictions(model, memory, frames, run: RunSettings):
    """The model's predictions of ``frames`` with the run's settings."""
    return model.segment_iter(
        memory,
        frames,
        mode=run.mode,
        threshold=run.threshold,
        batch_size=run.batch_size,
        tile_size=run.tile_size,
        halo=run.halo,
        instances=run.objects or False,
        cancel=run.cancel,
    )
