"""OME-Zarr (NGFF 0.4 and 0.5) images read through ``zarr``, window by window.

The image is the first multiscale of the store (or of its series ``0`` in a
bioformats2raw layout) at full resolution (level 0): its axes from the multiscale's
``axes`` (t, c, z, y, x), its channel names from ``omero.channels[].label``, its pixel
sizes from level 0's ``scale`` (times the multiscale's own, if any), converted to
micrometres. Only the chunks a frame or window covers are read.

A chunk that is absent from the store is read as the array's fill value, as the Zarr
specification says: writers leave out chunks that hold only that value (ome-zarr's
writer does, with zarr 3), so an absent chunk is no error; but a lost chunk looks the
same, so each image with absent chunks in what was read is named in a warning.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["is_zarr_store", "level0_scale", "open_omezarr", "store_state"]

#: files that make a folder a Zarr store (v3; v2 group, array, attributes)
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")

#: NGFF length units -> micrometres
_UNITS = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "decimeter": 1e5,
    "meter": 1e6,
    "kilometer": 1e9,
    "inch": 25400.0,
    "foot": 304800.0,
    "mile": 1609344e3,
    "yard": 914400.0,
}

#: the OME-Zarr versions read (NGFF 0.4: Zarr v2 stores; 0.5: Zarr v3)
VERSIONS = ("0.4", "0.5")


def is_zarr_store(path) -> bool:
    """Whether ``path`` is a folder holding a Zarr store (named ``*.zarr``, or holding a
    Zarr metadata file): one image, never walked into."""
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        if path.name.lower().endswith(".zarr"):
            return True
        return any((path / m).is_file() for m in ZARR_MARKERS)
    except OSError:
        return False


def _needs_zarr(path) -> InvalidInputError:
    return InvalidInputError(
        f"{path} is a Zarr store (OME-Zarr); reading it needs the zarr package: "
        'pip install "napari-sansa[formats]" (or [large])'
    )


def _attributes(group) -> dict:
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):  # NGFF 0.5: everything under "ome"
        return ome
    return attrs


def _open_group(path: Path):
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for what is not a store
        raise InvalidInputError(
            f"{path} is not a readable Zarr store ({type(exc).__name__}: {str(exc)[:200]}): "
            "napari-sansa reads OME-Zarr images (NGFF 0.4 and 0.5); check the path"
        ) from None
    if not isinstance(node, zarr.Group):
        raise InvalidInputError(
            f"{path} is a Zarr array without OME-Zarr (NGFF) metadata: napari-sansa reads "
            "OME-Zarr images, whose group says in its 'multiscales' metadata what the axes "
            "are. Write it as OME-Zarr (e.g. ome_zarr.writer.write_image) or as a TIFF"
        )
    return node


def _multiscale(path: Path, group) -> tuple[object, dict, str]:
    """The group holding the image, its first multiscale and its NGFF version."""
    attrs = _attributes(group)
    if not attrs.get("multiscales") and "bioformats2raw.layout" in attrs:
        try:
            series = group["0"]
        except KeyError:
            series = None
        if series is not None:
            others = [k for k in group.group_keys() if k.isdigit() and k != "0"]
            if others:
                log.warning(
                    "%s is a bioformats2raw store of %d images: only its first, 0/, is "
                    "labelled; give the others' paths (e.g. %s) to label them",
                    path,
                    len(others) + 1,
                    path / sorted(others, key=int)[0],
                )
            group, attrs = series, _attributes(series)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        if "plate" in attrs or "well" in attrs:
            raise InvalidInputError(
                f"{path} is an OME-Zarr {'plate' if 'plate' in attrs else 'well'} (HCS), not "
                "an image: give the path of one of its images (e.g. "
                f"{path / 'A' / '1' / '0'})"
            )
        raise InvalidInputError(
            f"{path} is a Zarr store without OME-Zarr (NGFF) metadata: its group has no "
            "'multiscales' (looked in zarr.json's attributes 'ome' and in .zattrs), so its "
            "axes are not known. napari-sansa reads OME-Zarr images (NGFF 0.4, 0.5): write "
            "it as one (e.g. ome_zarr.writer.write_image) or as a TIFF"
        )
    if not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise InvalidInputError(f"{path}: its 'multiscales' metadata is not a list of objects")
    ms = multiscales[0]
    version = str(attrs.get("version") or ms.get("version") or "")
    if version and version not in VERSIONS:
        log.warning(
            "%s is OME-Zarr %s; napari-sansa was tried on %s: reading it as those",
            path,
            version,
            " and ".join(VERSIONS),
        )
    return group, ms, version


def _axes(path: Path, ms: dict, ndim: int) -> tuple[str, list]:
    """The axes of ``ms`` as letters (T, C, Z, Y, X; Q: other) and their units."""
    axes = ms.get("axes")
    if not isinstance(axes, list) or len(axes) != ndim:
        n = len(axes) if isinstance(axes, list) else "no"
        raise InvalidInputError(
            f"{path}: its multiscales metadata lists {n} axes, but its full-resolution array "
            f"has {ndim} dimensions: the metadata does not fit the data; write the image again"
        )
    letters, units = [], []
    for a in axes:
        name, kind, unit = (a, None, None) if isinstance(a, str) else (None, None, None)
        if isinstance(a, dict):
            name, kind, unit = a.get("name"), a.get("type"), a.get("unit")
        name = str(name or "").lower()
        if name in ("t", "c", "z", "y", "x"):
            letter = name.upper()
        elif kind == "time":
            letter = "T"
        elif kind == "channel":
            letter = "C"
        else:
            letter = "Q"
        if letter in letters:
            letter = "Q" if "Q" not in letters else "I"
        letters.append(letter)
        units.append(unit)
    return "".join(letters), units


def level0_scale(datasets: list, ms: dict, ndim: int) -> list | None:
    """Level 0's scale (times the multiscale's own scale), or None if not said."""
    scale = [1.0] * ndim
    found = False
    own = (datasets[0].get("coordinateTransformations"), ms.get("coordinateTransformations"))
    for transforms in own:
        for tr in transforms or ():
            if isinstance(tr, dict) and tr.get("type") == "scale":
                values = tr.get("scale")
                if isinstance(values, list) and len(values) == ndim:
                    scale = [s * float(v) for s, v in zip(scale, values, strict=True)]
                    found = True
    return scale if found else None


def _pixel_sizes(axes: str, units: list, scale: list | None) -> dict:
    """``{axis: micrometres}`` of the space axes (a space axis of no unit: micrometres)."""
    if scale is None:
        return {}
    sizes = {}
    for a, unit, s in zip(axes, units, scale, strict=True):
        if a not in "ZYX":
            continue
        factor = _UNITS.get(str(unit).lower()) if unit else 1.0
        if factor is not None:
            sizes[a] = float(s) * factor
    return sizes


def _channel_names(attrs: dict, n: int | None) -> list | None:
    omero = attrs.get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list):
        return None
    names = [
        str(c.get("label")) if isinstance(c, dict) and c.get("label") is not None else str(i)
        for i, c in enumerate(channels)
    ]
    return names if n is None or len(names) == n else None


def _check_levels(path: Path, group, datasets: list, shape: tuple, axes: str) -> None:
    """Every level of the multiscale is there, with level 0's axes and a size no larger
    than the level before it on every axis (what a pyramid is)."""
    before = shape
    for k, d in enumerate(datasets[1:], start=1):
        where = d.get("path") if isinstance(d, dict) else None
        try:
            level = group[str(where)]
        except KeyError:
            raise InvalidInputError(
                f"{path}: level {k} of its multiscale ({where!r}) is missing from the store; "
                "the store is incomplete: write it again"
            ) from None
        size = tuple(int(n) for n in getattr(level, "shape", ()))
        if len(size) != len(shape) or any(a > b for a, b in zip(size, before, strict=True)):
            raise InvalidInputError(
                f"{path}: the levels of its multiscale disagree in shape: level {k} ({where!r}) "
                f"is {'x'.join(map(str, size))}, level {k - 1} "
                f"{'x'.join(map(str, before))} (axes {axes}); a level is never larger than "
                "the one before it: the store is damaged or not a pyramid; write it again"
            )
        before = size


class _Chunks:
    """Notices chunks of a local Zarr array absent from the store (they read as the fill
    value): a warning names the image, once."""

    def __init__(self, path: Path, array):
        self.path, self.array = path, array
        self.warned = False
        meta = array.metadata
        self.grid = tuple(int(n) for n in meta.chunk_grid.chunk_shape)
        self.encode = meta.encode_chunk_key
        root = getattr(array.store, "root", None)
        self.folder = None if root is None else Path(root) / array.path
        self.shape = tuple(int(n) for n in array.shape)

    def __call__(self, key) -> None:
        if self.warned or self.folder is None:
            return
        ranges = []
        for k, n, c in zip(key, self.shape, self.grid, strict=True):
            if isinstance(k, slice):
                start, stop, _ = k.indices(n)
                if stop <= start:
                    return
                ranges.append(range(start // c, (stop - 1) // c + 1))
            else:
                ranges.append(range(int(k) // c, int(k) // c + 1))
        total = math.prod(len(r) for r in ranges)
        import itertools

        absent = [
            coords
            for coords in itertools.product(*ranges)
            if not os.path.exists(self.folder / self.encode(coords))
        ]
        if absent:
            self.warned = True
            log.warning(
                "%s: %d of the %d chunks read (e.g. %s) are absent from the store and are "
                "read as the fill value %r, as Zarr says (writers leave out chunks that "
                "hold only that value); if chunks were lost, the labels there are those of "
                "a blank image: check the store",
                self.path,
                len(absent),
                total,
                self.encode(absent[0]),
                self.array.fill_value,
            )


def open_omezarr(path, axes=None, channels=None, *, axes_tail=False):
    """An OME-Zarr image as an :class:`~napari_sansa.dataset.readers.arraystack.ArrayStack`
    (its level 0, read window by window); a clear error for what is not one."""
    from napari_sansa.dataset.readers.arraystack import ArrayStack

    path = Path(path)
    try:
        import zarr  # noqa: F401
    except ImportError:
        raise _needs_zarr(path) from None
    group = _open_group(path)
    image, ms, version = _multiscale(path, group)
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise InvalidInputError(f"{path}: its multiscales metadata lists no datasets (levels)")
    level0 = str(datasets[0].get("path"))
    try:
        array = image[level0]
    except KeyError:
        raise InvalidInputError(
            f"{path}: its full-resolution array ({level0!r}, level 0 of its multiscale) is "
            "missing from the store; the store is incomplete: write it again"
        ) from None
    shape = tuple(int(n) for n in array.shape)
    recorded, units = _axes(path, ms, len(shape))
    _check_levels(path, image, datasets, shape, recorded)
    attrs = _attributes(image)
    n_channels = shape[recorded.index("C")] if "C" in recorded else None
    sizes = _pixel_sizes(recorded, units, level0_scale(datasets, ms, len(shape)))
    fmt = f"OME-Zarr {version}" if version else "OME-Zarr"
    return ArrayStack(
        path,
        array,
        recorded,
        axes,
        channels,
        axes_tail=axes_tail,
        channel_names=_channel_names(attrs, n_channels),
        pixel_sizes=sizes,
        format=fmt,
        check=_Chunks(path, array),
    )


def store_state(path) -> dict:
    """What identifies a Zarr store's content (a folder of many files): its files'
    number, total size and latest modification time, and a SHA-256 of its metadata
    files ({} if it cannot be listed). Its top-level ``labels/`` group is left out: label
    images are not the image's pixels, and ``--into-input-store`` adds one there, which
    must not make the image look changed to the next run."""
    import hashlib

    h = hashlib.sha256()
    count = size = latest = 0
    try:
        for folder, dirs, files in os.walk(path):
            if folder == os.fspath(path) and "labels" in dirs:
                dirs.remove("labels")
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(folder, name)
                st = os.stat(p)
                count += 1
                size += st.st_size
                latest = max(latest, st.st_mtime_ns)
                if name in ZARR_MARKERS:
                    h.update(os.path.relpath(p, path).encode())
                    with open(p, "rb") as fh:
                        h.update(fh.read())
    except OSError:
        return {}
    return {"files": count, "size": size, "mtime_ns": latest, "metadata_sha256": h.hexdigest()}
