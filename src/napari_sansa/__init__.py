"""napari-sansa: SANSA few-shot segmentation for napari and for whole datasets.

Mark each class on one or a few images; SANSA (a frozen SAM2 with small adapters,
arXiv 2505.21795) labels the rest. Importing this package is light: torch and
napari are loaded only when a model or a widget is first used.
"""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-sansa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from napari_sansa.core import __all__ as _core_all

__all__ = [*_core_all, "DatasetOptions", "__version__"]
#: public names of the dataset layer, imported on first use (as the core's model names)
_DATASET = {"DatasetOptions": "napari_sansa.dataset.settings"}


def __getattr__(name):
    # the core's public names (Reference, Mask, ..., load_model); the model's ones import
    # torch on first use
    if name in _core_all:
        from napari_sansa import core

        return getattr(core, name)
    if name in _DATASET:  # a whole-folder run's options, from napari_sansa.dataset
        import importlib

        return getattr(importlib.import_module(_DATASET[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
