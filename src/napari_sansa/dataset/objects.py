"""``objects.csv`` (``--instances``): one row per object of every object image in ``--out``.

Like ``scores.csv`` (see :mod:`~napari_sansa.dataset.manifest`), it is rebuilt at the end
of every run from the outputs in the folder: each object image written with this run's
settings keeps its object table in its record, so the CSV lists every object of every
target labelled there so far, and a target that failed in this run has no rows. Only an
``objects.csv`` napari-sansa wrote is replaced; any other file of that name is refused.

A run without ``--instances`` removes napari-sansa's object images of the targets it
labels (they would not belong to the new labels: ``records.remove_stale_outputs``), and
then :func:`prune_objects_csv` keeps in an ``objects.csv`` napari-sansa wrote only the
rows of targets whose object image is still in the folder (no row left: no file).

A stack's 3D objects (``dims="3d"``, a Z axis) have one row each, with ``volume``,
``physical_volume``, ``centroid_z`` and the box's z (:data:`~napari_sansa.core.measures.COLUMNS_3D`)
and, for a T×Z stack, the time point in the ``t`` column (``frame`` is empty: an object
spans several frames). A folder with both kinds has the columns of both, empty where
they do not apply.

:func:`resolve_dims` chooses ``dims`` where the options leave it open: 3D objects, except
in a folder whose objects were made per plane by an earlier run (its record has no
``dims``), which stays per plane so that it resumes (said in the log).
"""

from __future__ import annotations

from pathlib import Path

from napari_sansa.core.measures import COLUMNS, COLUMNS_3D
from napari_sansa.dataset.discovery import natural_key
from napari_sansa.dataset.manifest import (
    axis_columns,
    owned_text,
    prune_owned_csv,
    run_tables,
    write_owned_csv,
)
from napari_sansa.dataset.rows import frame_at

OBJECTS_CSV = "objects.csv"
OBJECTS_DIGESTS = Path(".napari-sansa") / "objects.json"
OBJECT_KEYS = ["target", "frame", *COLUMNS]
#: every column an object row may have, in the order of objects.csv
ALL_COLUMNS = (
    *COLUMNS[:3],
    *COLUMNS_3D[2:5],
    *COLUMNS[3:5],
    "bbox_min_z",
    *COLUMNS[5:7],
    "bbox_max_z",
    *COLUMNS[7:],
)


def resolve_dims(options, out: Path, overwrite: bool):
    """``options`` (DatasetOptions) with ``instances.dims`` chosen when it is None: "3d"
    (or "2d" with ``refine``, which works per plane), but "2d" in an output folder whose
    run record has objects made per plane (no ``dims``: runs before 3D objects, or
    ``--objects-per-plane``), unless ``overwrite`` redoes that folder."""
    import dataclasses
    import logging

    from napari_sansa.dataset.manifest import RUN_FILE, read_run_file

    objects = options.segment.instances
    if objects is None or objects.dims is not None:
        return options
    dims = "3d" if objects.in_3d else "2d"
    if dims == "3d" and not overwrite:
        before = read_run_file(out).get("settings")
        earlier = before.get("instances") if isinstance(before, dict) else None
        if isinstance(earlier, dict) and earlier.get("dims") != "3d":
            dims = "2d"
            logging.getLogger(__name__).warning(
                "%s holds objects made per plane by an earlier run (%s): this run keeps "
                "objects per plane there so that the folder resumes; for 3D objects, use "
                "--overwrite (redoes the folder) or another --out",
                out,
                out / RUN_FILE,
            )
    chosen = dataclasses.replace(objects, dims=dims)
    return options.make(options, instances=chosen)


def check_objects_csv(out: Path) -> None:
    """Refuse a run whose ``objects.csv`` would replace a file napari-sansa did not write
    (called before anything is loaded or written)."""
    owned_text(out, OBJECTS_CSV, OBJECTS_DIGESTS)


def object_rows(out: Path, signature: str, rows, skip=frozenset()) -> list[dict]:
    """The rows of ``objects.csv`` after a run: the objects of every object image in ``out``
    written with this run's settings, except those of targets that failed in this run
    (``rows``: this run's rows of ``scores.csv``) and of outputs in ``skip``."""
    result = []
    for source, info, columns, values in run_tables(out, signature, rows, "objects", skip):
        stack = len(info.get("scores") or [None]) > 1
        row = dict(zip(columns, values, strict=False))
        frame = row.pop("frame", "") if stack else ""
        result.append({"target": source, "frame": frame, **frame_at(info, frame), **row})
    return result


def write_objects_csv(out: Path, rows) -> Path:
    """Write ``rows`` (:func:`object_rows`) as ``objects.csv``, atomically."""
    present = [c for c in ALL_COLUMNS if any(c in r for r in rows)] or list(COLUMNS)
    keys = [*OBJECT_KEYS[:2], *axis_columns(rows, [*OBJECT_KEYS, *ALL_COLUMNS]), *present]

    def order(r):
        frame = -1 if r["frame"] == "" else int(r["frame"])
        return natural_key(Path(r["target"])), frame, int(r["object"])

    return write_owned_csv(out, OBJECTS_CSV, OBJECTS_DIGESTS, keys, rows, order)


def prune_objects_csv(out: Path) -> Path | None:
    """After a run without objects: drop from napari-sansa's ``objects.csv`` the rows of
    targets that have no object image of napari-sansa's any more; remove the file (and
    its digests) when no row is left. Any other ``objects.csv`` is left alone. Returns
    the CSV's path when one remains."""
    return prune_owned_csv(out, OBJECTS_CSV, OBJECTS_DIGESTS, "objects", write_objects_csv)
