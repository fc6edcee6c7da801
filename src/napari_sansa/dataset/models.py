"""The model of a run: what its settings record of it, and the model loaded once per
process and kept (local runs and Dask workers)."""

from __future__ import annotations

from dataclasses import replace

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.cache import ModelCache
from napari_sansa.core.models.source import ModelSource

_MODELS = ModelCache(max_models=2)  # keyed by weights content and resolved settings


def cached_model(source: ModelSource):
    """The model of ``source``, loaded once per process and kept (Dask workers)."""
    return _MODELS.get(source)


def run_model(model, client=None):
    """``(loaded model or None, ModelSource or None, identity, earlier identity or None)``
    of a run's ``model`` argument: a registry name, a ModelSource or a loaded SansaModel.

    The identity is what the run's settings record. A model loaded from files records
    the identity of the files and settings it came from, as its ModelSource does, so a
    folder started with one goes on with the other (the widget passes the model, the
    command line the source); weights made or changed in memory (fine-tuned, fresh)
    have no such identity and record one of their own. The earlier identity is how runs
    given a loaded model recorded it before: such folders go on too."""
    from napari_sansa.core.model import SansaModel

    if isinstance(model, SansaModel):
        if client is not None:
            raise InvalidInputError("with a Dask client, give the model as a name or a ModelSource")
        own = {"model": model.identity}
        if model.source_identity is None:
            return model, None, own, None
        return model, None, model.source_identity, own
    source = ModelSource(name=model) if isinstance(model, str) else model
    if not isinstance(source, ModelSource):
        raise InvalidInputError("model must be a registry name, a ModelSource or a SansaModel")
    # every image is seen once: a feature cache would only cost memory and hashing
    source = replace(source, cache_bytes=0)
    return None, source, source.identity(), None
