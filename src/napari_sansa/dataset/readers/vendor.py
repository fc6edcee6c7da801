"""Vendor microscopy formats (CZI, ND2, LIF, DV) read through ``bioio`` and its
plugins, window by window through bioio's dask arrays.

``bioio`` is an optional dependency (``pip install "napari-sansa[formats]"``), and each
vendor format needs its own plugin on top (``bioio-czi``, ``bioio-nd2``, ...): a file
whose plugin is not installed is refused with the command that installs it. Only the
first scene of a file of several is read (a warning says so); bioio's dims (T, C, Z, Y,
X, and S for RGB samples) are the axes, T and Z of size 1 left out (a CZI of one
time point is not a stack of one); pixel sizes are bioio's, in micrometres.
"""

from __future__ import annotations

import logging
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["VENDOR_PLUGINS", "check_plugins", "needs_plugin", "open_vendor"]

#: vendor formats -> (name, the bioio plugin that reads them; each checked to exist on
#: PyPI: bioio-czi 3.0.1, bioio-nd2 2.6.0, bioio-lif 2.0.1, bioio-dv 1.2.0)
VENDOR_PLUGINS = {
    ".czi": ("Zeiss CZI", "bioio-czi"),
    ".nd2": ("Nikon ND2", "bioio-nd2"),
    ".lif": ("Leica LIF", "bioio-lif"),
    ".dv": ("DeltaVision", "bioio-dv"),
}


def needs_plugin(path, why: str = "") -> InvalidInputError:
    """The error for a vendor file whose bioio plugin is not installed."""
    path = Path(path)
    name, plugin = VENDOR_PLUGINS.get(path.suffix.lower(), ("this", "a bioio plugin"))
    return InvalidInputError(
        f"{path} is a {name} file: napari-sansa reads it through bioio and its plugin "
        f"{plugin}, {why or 'which is not installed'}. Install them with: "
        f'pip install "napari-sansa[formats]" {plugin}'
        " (then run the same command again), or convert the file to OME-TIFF or OME-Zarr"
    )


def _bioio(path):
    try:
        import bioio
    except ImportError:
        raise needs_plugin(path, "and bioio is not installed") from None
    return bioio


def check_plugins(paths) -> None:
    """Refuse vendor files whose plugin is not installed, before anything is read or
    written (the plugins bioio knows are looked up once per suffix, by extension)."""
    by_suffix = {}
    for p in paths:
        by_suffix.setdefault(Path(p).suffix.lower(), p)
    by_suffix = {s: p for s, p in by_suffix.items() if s in VENDOR_PLUGINS}
    if not by_suffix:
        return
    _bioio(next(iter(by_suffix.values())))
    from bioio.plugins import get_plugins

    try:
        known = {str(ext).lower() for ext in get_plugins(use_cache=True)}
    except Exception as exc:  # noqa: BLE001 - a broken plugin's entry point
        raise InvalidInputError(
            f"bioio cannot list its plugins ({type(exc).__name__}: {exc}): check its "
            "installation (pip check)"
        ) from None
    for suffix, p in by_suffix.items():
        if suffix not in known:
            raise needs_plugin(p)


def _scene(img, path: Path) -> None:
    scenes = tuple(img.scenes)
    if len(scenes) > 1:
        log.warning(
            "%s holds %d scenes (%s, ...): only its first, %s, is labelled; save the others "
            "as files of their own to label them",
            path,
            len(scenes),
            ", ".join(map(str, scenes[:3])),
            scenes[0],
        )


def open_vendor(path, axes=None, channels=None, *, axes_tail=False, bioimage=None):
    """A file read through bioio as an :class:`~napari_sansa.dataset.readers.arraystack.
    ArrayStack` (its first scene, read window by window through bioio's dask array).
    ``bioimage``: an opened ``bioio.BioImage`` (tests; else ``path`` is opened)."""
    from napari_sansa.dataset.readers.arraystack import ArrayStack
    from napari_sansa.dataset.tiffstack import unreadable_reason

    path = Path(path)
    if bioimage is None:
        bioio = _bioio(path)
        from bioio_base.exceptions import UnsupportedFileFormatError

        try:
            bioimage = bioio.BioImage(path)
        except UnsupportedFileFormatError:
            if path.suffix.lower() in VENDOR_PLUGINS:
                raise needs_plugin(
                    path, "which did not take it: it is not installed, or the file is damaged"
                ) from None
            raise InvalidInputError(
                f"{path}: no installed bioio plugin reads it (see bioio's list of plugins); "
                "convert it to OME-TIFF or OME-Zarr"
            ) from None
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - plugins raise many types for bad files
            raise InvalidInputError(unreadable_reason(path, exc)) from None
    try:
        _scene(bioimage, path)
        order = str(bioimage.dims.order).upper()
        data = bioimage.dask_data
        names = list(bioimage.channel_names or [])
        sizes = bioimage.physical_pixel_sizes
    except Exception as exc:  # noqa: BLE001
        raise InvalidInputError(unreadable_reason(path, exc)) from None
    shape = dict(zip(order, data.shape, strict=True))
    drop = {a for a in "TZ" if shape.get(a) == 1}
    if "S" in order and shape.get("C") == 1:
        drop.add("C")  # RGB samples: no channel axis besides them
    key = tuple(0 if a in drop else slice(None) for a in order)
    data = data[key]
    recorded = "".join(a for a in order if a not in drop)
    n_channels = shape.get("C") if "C" in recorded else None
    pixel = {
        a: float(v)
        for a, v in (("Z", sizes.Z), ("Y", sizes.Y), ("X", sizes.X))
        if v is not None and a in recorded
    }
    reader = type(getattr(bioimage, "reader", bioimage)).__module__.split(".")[0]
    return ArrayStack(
        path,
        data,
        recorded,
        axes,
        channels,
        axes_tail=axes_tail,
        channel_names=names if n_channels is not None and len(names) == n_channels else None,
        pixel_sizes=pixel,
        format=f"read by {reader}",
    )
