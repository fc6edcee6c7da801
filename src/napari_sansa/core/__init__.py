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
    OptionError,
    SansaError,
)
from napari_sansa.core.images import to_float_rgb
from napari_sansa.core.prompts import Box, Mask, Points, Reference, Scribble

__all__ = [
    "Box",
    "CheckpointError",
    "Example",
    "FinetuneOptions",
    "InvalidInputError",
    "Mask",
    "ModelNotFoundError",
    "ObjectOptions",
    "ObjectPropagation",
    "ObjectTable",
    "OptionError",
    "Points",
    "Prediction",
    "Predictions",
    "Reference",
    "SansaError",
    "SansaModel",
    "Scribble",
    "SegmentOptions",
    "episode_loss",
    "finetune",
    "finetune_iter",
    "list_models",
    "load_model",
    "merge_tracks",
    "object_table",
    "propagate_objects",
    "refine_objects",
    "split_objects",
    "split_track",
    "stack_objects",
    "tile_grid",
    "to_float_rgb",
    "track_objects",
    "track_table",
    "TrackTable",
    "write_ctc",
    "write_labels",
]

_LAZY = {
    "load_model": (".models.loading", "load_model"),
    "SansaModel": (".model", "SansaModel"),
    "Prediction": (".results", "Prediction"),
    "Predictions": (".results", "Predictions"),
    "list_models": (".models.registry", "list_models"),
    "Example": (".training.episodes", "Example"),
    "episode_loss": (".training.loss", "episode_loss"),
    "finetune": (".training.api", "finetune"),
    "finetune_iter": (".training.api", "finetune_iter"),
    "FinetuneOptions": (".training.options", "FinetuneOptions"),
    "ObjectOptions": (".objects", "ObjectOptions"),
    "SegmentOptions": (".options", "SegmentOptions"),
    "ObjectTable": (".objects", "ObjectTable"),
    "object_table": (".objects", "object_table"),
    "refine_objects": (".refine", "refine_objects"),
    "ObjectPropagation": (".propagation", "ObjectPropagation"),
    "propagate_objects": (".propagation", "propagate_objects"),
    "split_objects": (".objects", "split_objects"),
    "stack_objects": (".objects", "stack_objects"),
    "tile_grid": (".tiling", "tile_grid"),
    "merge_tracks": (".track_edits", "merge_tracks"),
    "split_track": (".track_edits", "split_track"),
    "track_objects": (".tracks", "track_objects"),
    "track_table": (".tracks", "track_table"),
    "TrackTable": (".tracks", "TrackTable"),
    "write_ctc": (".tracks", "write_ctc"),
    "write_labels": (".tiling", "write_labels"),
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
