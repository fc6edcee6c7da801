"""The model of a run, loaded once per process and kept (local runs and Dask workers)."""

from __future__ import annotations

from napari_sansa.core.models.cache import ModelCache
from napari_sansa.core.models.source import ModelSource

_MODELS = ModelCache(max_models=2)  # keyed by weights content and resolved settings


def _cached_model(source: ModelSource):
    """The model of ``source``, loaded once per process and kept (Dask workers)."""
    return _MODELS.get(source)
