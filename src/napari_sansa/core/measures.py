"""Measuring objects: one row per object of an object map, and stacks of frames.

:func:`object_table` measures each object of an object map (as from
:func:`~napari_sansa.core.objects.split_objects`): class, area, centroid, bounding box
(as scikit-image's ``regionprops``: min inclusive, max exclusive) and mean probability.
A ``(Z, Y, X)`` object map (3D objects) gets the 3D columns (:data:`COLUMNS_3D`): volume
in voxels and, with a voxel size, in physical units, and z in the centroid and the box.
:func:`stack_objects` joins the frames of a stack with ids unique in the stack.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "COLUMNS",
    "COLUMNS_3D",
    "ObjectTable",
    "check_spacing",
    "last_id",
    "object_dtype",
    "object_table",
    "renumbered",
    "stack_objects",
    "stack_offsets",
    "stack_tables",
]

COLUMNS = (
    "object",
    "class",
    "area",
    "centroid_row",
    "centroid_col",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_row",
    "bbox_max_col",
    "mean_probability",
)

#: the columns of the table of a ``(Z, Y, X)`` object map (3D objects)
COLUMNS_3D = (
    "object",
    "class",
    "volume",
    "physical_volume",
    "centroid_z",
    "centroid_row",
    "centroid_col",
    "bbox_min_z",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_z",
    "bbox_max_row",
    "bbox_max_col",
    "mean_probability",
)


def object_dtype(n: int) -> np.dtype:
    """``uint16`` for up to 65535 objects, wider beyond (never wraps)."""
    for dt in (np.uint16, np.uint32):
        if n <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def check_class_map(class_map, volumes: bool = False) -> np.ndarray:
    """The class map as an integer array; ``volumes``: a ``(Z, Y, X)`` map is allowed."""
    arr = np.asarray(class_map)
    if arr.ndim != 2 and not (volumes and arr.ndim == 3):
        raise InvalidInputError(
            f"the class map must be 2D (rows, cols){' or 3D (z, rows, cols)' if volumes else ''}"
            f" of class ids, got shape {arr.shape}"
        )
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(
            f"the class map must hold integer class ids (0 = background), got dtype {arr.dtype}"
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise InvalidInputError("the class map has negative ids: use 0 for background, 1, 2, ...")
    return arr


def check_spacing(spacing, ndim: int = 3) -> tuple[float, ...] | None:
    """A voxel size (``(z, y, x)`` for 3D, ``(y, x)`` for 2D) as positive finite floats;
    None stays None (unknown: isotropic voxels are assumed)."""
    if spacing is None:
        return None
    names = "(z, y, x)" if ndim == 3 else "(y, x)"
    if isinstance(spacing, str):
        spacing = [p for p in spacing.replace("x", ",").split(",") if p.strip()]
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"the voxel size must be {ndim} numbers {names}, e.g. "
            f"{'2,0.5,0.5' if ndim == 3 else '0.5,0.5'}, got {spacing!r}"
        ) from None
    if len(values) != ndim:
        raise InvalidInputError(
            f"the voxel size must be {ndim} numbers {names}, one per axis of the "
            f"{'stack' if ndim == 3 else 'image'}, got {len(values)}: {spacing!r}"
        )
    bad = [v for v in values if not (np.isfinite(v) and v > 0)]
    if bad:
        raise InvalidInputError(
            f"the voxel size {names} must be positive numbers (the size of a voxel along each "
            f"axis, in one unit, e.g. micrometres), got {values}: change {bad[0]}"
        )
    return values


def check_probabilities(probabilities, classes, shape) -> dict:
    if probabilities is None:
        return {}
    if not isinstance(probabilities, dict):
        if len(classes) > 1:
            raise InvalidInputError(
                "probabilities must be a dict {class id: (H, W) map} when the class map has "
                "several classes"
            )
        probabilities = dict.fromkeys(classes, probabilities)
    out = {}
    for c in classes:
        if c not in probabilities:
            raise InvalidInputError(f"probabilities has no map for class {c} of the class map")
        p = np.asarray(probabilities[c], dtype=np.float32)
        if p.shape != shape:
            raise InvalidInputError(
                f"the probability map of class {c} has shape {p.shape}, the class map {shape}"
            )
        out[c] = p
    return out


class ColumnTable:
    """A table whose columns are numpy arrays of one length (``table["area"]``): what
    :class:`ObjectTable` and :class:`~napari_sansa.core.tracks.TrackTable` share.
    ``as_dict()`` suits napari's layer ``features``."""

    #: the column whose length is the table's (a subclass names it)
    key = ""

    def __init__(self, data: dict, required=(), what: str = "a table"):
        missing = [c for c in required if c not in data]
        if missing:
            raise InvalidInputError(f"{what} needs the columns {missing}")
        self.columns = tuple(data)
        self._data = {name: np.asarray(data[name]) for name in self.columns}

    def __len__(self) -> int:
        return len(self._data[self.key])

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def __contains__(self, name) -> bool:
        return name in self._data

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._data.items()}

    def rows(self) -> list[dict]:
        return [{k: v[i].item() for k, v in self._data.items()} for i in range(len(self))]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.as_dict())

    def to_csv(self, path=None, *, extra: dict | None = None) -> str | None:
        """The table as CSV text (``path`` None) or written atomically to ``path``.

        ``extra``: columns put first with one value for every row (e.g. the image name)."""
        extra = extra or {}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*extra, *self.columns])
        for row in self.rows():
            writer.writerow([*extra.values(), *(csv_value(row[k]) for k in self.columns)])
        if path is None:
            return buf.getvalue()
        from napari_sansa.core.atomic import write_text_atomic

        write_text_atomic(path, buf.getvalue())
        return None


class ObjectTable(ColumnTable):
    """One row per object; columns are numpy arrays (``table["area"]``).

    Columns: ``object`` (id in the object map), ``class``, ``area`` (pixels),
    ``centroid_row``, ``centroid_col``, ``bbox_min_row``, ``bbox_min_col`` (inclusive),
    ``bbox_max_row``, ``bbox_max_col`` (exclusive, as ``regionprops``), and
    ``mean_probability`` (of the object's class over its pixels; NaN when no
    probabilities were given). A table of several frames (:func:`stack_objects`) starts
    with a ``frame`` column. ``as_dict()`` suits napari's layer ``features``.

    The table of 3D objects (``table.ndim == 3``) has :data:`COLUMNS_3D`: ``volume``
    (voxels) and ``physical_volume`` (``volume`` times the voxel size's product; NaN
    when the voxel size is unknown) instead of ``area``, and ``centroid_z``,
    ``bbox_min_z``, ``bbox_max_z`` besides the row and column ones.
    """

    columns = COLUMNS
    key = "object"

    def __init__(self, data: dict):
        required = COLUMNS_3D if "volume" in data else COLUMNS
        super().__init__(data, required, "an object table")

    @property
    def ndim(self) -> int:
        """3 for the table of 3D objects (:data:`COLUMNS_3D`), 2 otherwise."""
        return 3 if "volume" in self._data else 2

    def counts(self) -> dict[int, int]:
        """``{class: number of objects}``."""
        classes, n = np.unique(self._data["class"], return_counts=True)
        return {int(c): int(k) for c, k in zip(classes, n, strict=True)}

    def __repr__(self) -> str:
        return f"ObjectTable({len(self)} objects)"


def csv_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value


BLOCK_PIXELS = 1 << 21  # object_table reads the maps in blocks of rows of about this size


def _row_blocks(shape):
    """Blocks along the first axis (rows of an image, planes of a volume) of about
    ``BLOCK_PIXELS`` pixels each."""
    step = max(1, BLOCK_PIXELS // max(int(np.prod(shape[1:])), 1))
    return [slice(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]


def _coordinates(block: slice, shape) -> list[np.ndarray]:
    """The coordinate of every pixel of the block ``block`` of the first axis, per axis,
    raveled in raster order (as ``array[block].ravel()``)."""
    first = np.arange(block.start, block.stop, dtype=np.float64)
    inner = int(np.prod(shape[1:]))
    out = [np.repeat(first, inner)]
    n = block.stop - block.start
    for axis in range(1, len(shape)):
        after = int(np.prod(shape[axis + 1 :]))
        before = n * int(np.prod(shape[1:axis]))
        line = np.repeat(np.arange(shape[axis], dtype=np.float64), after)
        out.append(np.tile(line, before))
    return out


def object_table(objects, class_map, probabilities=None, *, spacing=None) -> ObjectTable:
    """Measure every object of an object map (as from :func:`split_objects`).

    An object's class is the class of its pixels in ``class_map`` (the most frequent
    one if they differ); its mean probability is that of its class over all its pixels.
    An object map with no objects gives an empty table. The maps are read in blocks of
    rows (of planes for a volume): nothing of the image's size is made.

    A ``(Z, Y, X)`` object map gives the table of 3D objects (:data:`COLUMNS_3D`);
    ``spacing``: its voxel size ``(z, y, x)``, for ``physical_volume`` (NaN without).
    """
    obj = np.asarray(objects)
    cmap = check_class_map(class_map, volumes=True)
    if obj.shape != cmap.shape or obj.dtype.kind not in "iu":
        raise InvalidInputError(
            f"objects must be an integer map the shape of the class map {cmap.shape}, "
            f"got {obj.dtype} {obj.shape}"
        )
    volume = obj.ndim == 3
    spacing = check_spacing(spacing, obj.ndim)
    n = int(obj.max()) if obj.size else 0
    k = int(cmap.max()) + 1 if cmap.size else 1
    area = np.zeros(n + 1, np.int64)
    sums = [np.zeros(n + 1) for _ in range(obj.ndim)]
    pairs, counts = [], []
    for rows in _row_blocks(obj.shape):
        o = obj[rows].astype(np.int64).ravel()
        area += np.bincount(o, minlength=n + 1)
        for axis, coord in enumerate(_coordinates(rows, obj.shape)):
            sums[axis] += np.bincount(o, weights=coord, minlength=n + 1)
        fg = o > 0
        pair, count = np.unique(o[fg] * k + cmap[rows].ravel()[fg], return_counts=True)
        pairs.append(pair)
        counts.append(count)
    ids = np.flatnonzero(area[1:]) + 1
    cls = _object_classes(np.concatenate(pairs), np.concatenate(counts), k, n)
    probs = check_probabilities(probabilities, [int(c) for c in np.unique(cls[ids])], cmap.shape)
    mean_p = np.full(n + 1, np.nan)
    if probs:
        total = np.zeros(n + 1)
        for rows in _row_blocks(obj.shape):
            o = obj[rows].astype(np.int64).ravel()
            of = cls[o]
            for c, p in probs.items():
                sel = (o > 0) & (of == c)
                total += np.bincount(o[sel], weights=p[rows].ravel()[sel], minlength=n + 1)
        with_p = ids[np.isin(cls[ids], list(probs))]
        mean_p[with_p] = total[with_p] / area[with_p]
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(obj.astype(np.int64) if obj.dtype == np.uint64 else obj, max_label=n)
    d = obj.ndim
    bbox = np.array(
        [[s.start for s in b] + [s.stop for s in b] for b in (boxes[i - 1] for i in ids)],
        dtype=np.int64,
    ).reshape(-1, 2 * d)
    area_f = np.maximum(area, 1).astype(np.float64)
    names = ("z", "row", "col") if volume else ("row", "col")
    size = {"area": area[ids].astype(np.int64)}
    if volume:
        physical = np.nan if spacing is None else float(np.prod(spacing))
        size = {"volume": area[ids].astype(np.int64), "physical_volume": area[ids] * physical}
    return ObjectTable(
        {
            "object": ids.astype(np.int64),
            "class": cls[ids].astype(np.int64),
            **size,
            **{f"centroid_{a}": (sums[i] / area_f)[ids] for i, a in enumerate(names)},
            **{f"bbox_min_{a}": bbox[:, i] for i, a in enumerate(names)},
            **{f"bbox_max_{a}": bbox[:, d + i] for i, a in enumerate(names)},
            "mean_probability": mean_p[ids],
        }
    )


def _object_classes(pairs: np.ndarray, counts: np.ndarray, k: int, n: int) -> np.ndarray:
    """Per object id, the most frequent class among its pixels, from ``object * k + class``
    pair codes and their pixel counts (a pair may appear several times)."""
    out = np.zeros(n + 1, dtype=np.int64)
    if not pairs.size:
        return out
    pair, inverse = np.unique(pairs, return_inverse=True)
    total = np.bincount(inverse, weights=counts)
    po, pc = pair // k, pair % k
    order = np.lexsort((-total, po))  # per object, the largest count first
    po, pc = po[order], pc[order]
    first = np.r_[True, po[1:] != po[:-1]]
    out[po[first]] = pc[first]
    return out


def stack_objects(frames) -> tuple[np.ndarray, ObjectTable]:
    """The objects of several same-sized frames (a stack) as one ``(N, H, W)`` array
    whose ids are unique in the stack (frame ``f``'s ids follow the last id of frame
    ``f - 1``), and one table with a ``frame`` column first. Frames of 3D objects
    (``(Z, Y, X)``, one per time point) give a ``(N, Z, Y, X)`` array.

    ``frames``: predictions (their ``objects`` and ``object_table``), or
    ``(objects, table)`` pairs, e.g. what a worker sent back frame by frame."""
    pairs = [f if isinstance(f, tuple) else (f.objects, f.object_table) for f in frames]
    if not pairs:
        raise InvalidInputError("no frames to stack")
    shapes = {np.shape(o) for o, _ in pairs}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"the frames have different shapes {sorted(shapes)}: stack them one by one"
        )
    last = [last_id(o) for o, _ in pairs]
    out = np.zeros((len(pairs), *shapes.pop()), dtype=object_dtype(sum(last)))
    for f, offset in enumerate(stack_offsets(last)):
        out[f] = renumbered(pairs[f][0], offset, out.dtype)
    return out, stack_tables([t for _, t in pairs], last)


def last_id(objects) -> int:
    """The largest object id of one frame's object map (0 when it has none)."""
    return int(np.max(objects)) if np.size(objects) else 0


def stack_offsets(last) -> list[int]:
    """What each frame's ids are shifted by in a stack (:func:`stack_objects`), from each
    frame's :func:`last_id`: frame ``f``'s ids follow the last id of frame ``f - 1``."""
    return [int(x) for x in np.cumsum([0, *last[:-1]])] if len(last) else []


def renumbered(objects, offset: int, dtype) -> np.ndarray:
    """One frame's object map with its ids shifted by ``offset`` (0 stays 0), as ``dtype``."""
    obj = np.asarray(objects)
    out = np.zeros(obj.shape, dtype=dtype)
    fg = obj > 0
    out[fg] = obj[fg].astype(dtype) + offset
    return out


def stack_tables(tables, last) -> ObjectTable:
    """The object tables of a stack's frames as one, ids shifted as :func:`stack_objects`
    shifts them (``last``: each frame's :func:`last_id`), with a ``frame`` column first."""
    kinds = {t.ndim for t in tables}
    if len(kinds) > 1:
        raise InvalidInputError("the frames mix 2D and 3D objects: stack them one by one")
    names = COLUMNS_3D if kinds == {3} else COLUMNS
    columns = {"frame": [], **{c: [] for c in names}}
    for f, (table, offset) in enumerate(zip(tables, stack_offsets(last), strict=True)):
        columns["frame"].append(np.full(len(table), f, dtype=np.int64))
        for c in names:
            columns[c].append(table[c] + offset if c == "object" else table[c])
    return ObjectTable({k: np.concatenate(v) for k, v in columns.items()})
