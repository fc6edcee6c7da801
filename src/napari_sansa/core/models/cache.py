"""``ModelCache``: loaded models kept for reuse, keyed by what they are, bounded.

A model is reused only for settings with the same
:meth:`~napari_sansa.core.models.settings.ModelSettings.cache_key`: the weights by
content (replacing a file at the same path loads the new weights), the device type
and precision as resolved on this machine (``precision="auto"`` is bf16 on a GPU,
fp32 on the CPU), the input size and the cache options. At most ``max_models``
models are kept, the least recently used one is dropped first (and before a new one
is loaded, so two large models never need to fit together when the bound is 1).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["ModelCache"]


class ModelCache:
    """Loaded models by settings, at most ``max_models`` of them (thread-safe).

    ``loads`` counts the models loaded, for tests and diagnostics."""

    def __init__(self, max_models: int = 1):
        if max_models < 1:
            raise ValueError("a model cache holds at least one model")
        self.max_models = int(max_models)
        self._models: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def __len__(self) -> int:
        return len(self._models)

    def has(self, settings) -> bool:
        """Whether ``settings`` would reuse a loaded model. Cheap once a model is loaded
        (the weights' fingerprints are memoised); never downloads anything."""
        if not self._models:
            return False
        try:
            key = _key(settings, download=False)
        except Exception:  # noqa: BLE001 - missing or unreadable files: it would load (and fail)
            return False
        return key in self._models

    def get(self, settings):
        """The model of ``settings``, loaded in the calling thread when not kept."""
        with self._lock:
            key = _key(settings)
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            while len(self._models) >= self.max_models:
                self._models.popitem(last=False)  # free it before loading the next one
            model = _load(settings)
            self.loads += 1
            self._models[key] = model
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def _load(settings):
    """A key that holds its model (a tuned model kept in memory) loads it itself;
    model settings are loaded from their files."""
    own = getattr(settings, "load", None)
    if callable(own):
        return own()
    from napari_sansa.core.models.loading import load_settings

    return load_settings(settings)


def _key(settings, download: bool = True) -> str:
    from dataclasses import replace

    if not download and settings.name is not None:
        settings = replace(settings, download=False)
    return settings.cache_key()
