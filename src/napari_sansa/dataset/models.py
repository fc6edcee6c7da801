"""The model of a run, loaded once per process and kept (local runs and Dask workers)."""

from __future__ import annotations

import threading

from napari_sansa.core.models.source import ModelSource

_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(source: ModelSource):
    """The model of ``source``, loaded once per process and kept (Dask workers)."""
    with _MODELS_LOCK:
        if source not in _MODELS:
            _MODELS[source] = source.load()
        return _MODELS[source]
