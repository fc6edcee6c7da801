"""napari-sansa's engine: numpy, torch and sam2 only (no napari, no Qt).

Public objects are importable from here and from the top-level package::

    import napari_sansa as ns
    model = ns.load_model(config="sam2_hiera_l", sam2_checkpoint=..., adapter_checkpoint=...)
    preds = model.segment([ns.Reference(image, [ns.Mask(mask, label=1)])], targets=[...])
"""

from napari_sansa.core.errors import (
    CheckpointError,
    InvalidInputError,
    ModelNotFoundError,
    SansaError,
)
from napari_sansa.core.images import to_float_rgb
from napari_sansa.core.prompts import Box, Mask, Points, Reference, Scribble

__all__ = [
    "Box",
    "CheckpointError",
    "InvalidInputError",
    "Mask",
    "ModelNotFoundError",
    "Points",
    "Prediction",
    "Predictions",
    "Reference",
    "SansaError",
    "SansaModel",
    "Scribble",
    "list_models",
    "load_model",
    "to_float_rgb",
]

_LAZY = {
    "load_model": (".models.loading", "load_model"),
    "SansaModel": (".model", "SansaModel"),
    "Prediction": (".results", "Prediction"),
    "Predictions": (".results", "Predictions"),
    "list_models": (".models.registry", "list_models"),
}


def __getattr__(name):
    # torch is imported only when a model-related object is first used
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
