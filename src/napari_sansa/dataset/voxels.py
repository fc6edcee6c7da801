"""The voxel size of a stack: what 3D objects need to respect anisotropy.

:func:`voxel_size_of` reads it from a file's metadata: OME-TIFF (``PhysicalSizeZ``,
``PhysicalSizeY``, ``PhysicalSizeX`` of its ``Pixels``) and ImageJ TIFF (``spacing``
in its description for z, the ``XResolution`` and ``YResolution`` tags for the plane).
Other readers (OME-Zarr, vendor formats) add theirs to :data:`READERS`. A size given
by the user (``ObjectOptions(spacing=...)``, ``--voxel-size``) always wins; without
either, voxels are taken as cubes (said in the run's log and in the object image's
record).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["READERS", "VoxelSize", "voxel_size_of", "voxel_size_for"]

#: micrometres per unit, for the units OME and ImageJ write
_MICRONS = {
    "m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "Å": 1e-4, "pm": 1e-6,
}  # fmt: skip


@dataclass(frozen=True)
class VoxelSize:
    """A voxel size ``(z, y, x)``, its ``unit`` (micrometres when known, else as the file
    says) and where it came from (``source``: "given", "OME-TIFF metadata", ...)."""

    spacing: tuple[float, float, float]
    unit: str
    source: str

    def record(self) -> dict:
        return {"spacing": list(self.spacing), "unit": self.unit, "source": self.source}


def _positive(values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def _in_microns(value: float, unit: str | None) -> tuple[float, str] | None:
    if unit is None:
        return value, "µm"  # OME's default unit
    scale = _MICRONS.get(unit.strip())
    return None if scale is None else (value * scale, "µm")


def _ome(tif) -> VoxelSize | None:
    """``PhysicalSize{Z,Y,X}`` of the first ``Pixels`` of an OME-TIFF, in micrometres."""
    if not tif.is_ome or not tif.ome_metadata:
        return None
    match = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", tif.ome_metadata)
    if match is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    sizes = []
    for axis in "ZYX":
        try:
            value = float(attrs[f"PhysicalSize{axis}"])
        except (KeyError, ValueError):
            return None
        got = _in_microns(value, attrs.get(f"PhysicalSize{axis}Unit"))
        if got is None:
            return None
        sizes.append(got[0])
    if not _positive(sizes):
        return None
    return VoxelSize(tuple(sizes), "µm", "OME-TIFF metadata")


def _imagej(tif) -> VoxelSize | None:
    """ImageJ's ``spacing`` (z) and the resolution tags (y, x: pixels per unit)."""
    meta = tif.imagej_metadata
    if not meta or "spacing" not in meta:
        return None
    try:
        z = float(meta["spacing"])
        page = tif.pages[0]
        sizes = []
        for name in ("YResolution", "XResolution"):
            tag = page.tags.get(name)
            num, den = tag.value if tag is not None else (1, 1)
            sizes.append(float(den) / float(num))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not _positive([z, *sizes]):
        return None
    unit = str(meta.get("unit") or "pixel")
    got = _MICRONS.get(unit.strip())
    if got is not None:
        return VoxelSize((z * got, sizes[0] * got, sizes[1] * got), "µm", "ImageJ metadata")
    return VoxelSize((z, sizes[0], sizes[1]), unit, "ImageJ metadata")


def _tiff(path: Path) -> VoxelSize | None:
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _ome(tif) or _imagej(tif)


#: the readers :func:`voxel_size_of` asks in turn (a path in, a VoxelSize or None out)
READERS = [_tiff]


def voxel_size_of(path) -> VoxelSize | None:
    """The voxel size ``(z, y, x)`` a file's metadata holds, or None when it holds none
    (or one that is not three positive sizes). A file that cannot be read gives None:
    reading the stack itself says why."""
    for reader in READERS:
        try:
            found = reader(Path(path))
        except Exception as exc:  # noqa: BLE001 - metadata is optional: never fatal
            log.debug("%s: no voxel size read (%s)", path, exc)
            found = None
        if found is not None:
            return found
    return None


def voxel_size_for(path, given) -> VoxelSize | None:
    """The voxel size of ``path``'s 3D objects: ``given`` (checked ``(z, y, x)``) when
    not None, else its metadata's; None: cubic voxels."""
    if given is not None:
        return VoxelSize(tuple(float(v) for v in given), "as given", "given")
    return voxel_size_of(path)
