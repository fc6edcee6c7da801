"""``ModelSource``: the earlier name of :class:`~napari_sansa.core.models.settings.ModelSettings`.

The widget, the command line and the dataset runner pass it to say which model to
load; it is the same frozen value (no torch import).
"""

from __future__ import annotations

from napari_sansa.core.models.settings import ModelSettings

__all__ = ["ModelSource"]

ModelSource = ModelSettings
