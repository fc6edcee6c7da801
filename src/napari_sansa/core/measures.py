"""Measuring objects: one row per object of an object map, and stacks of frames.

:func:`object_table` measures each object of an object map (as from
:func:`~napari_sansa.core.objects.split_objects`): class, area, centroid, bounding box
(as scikit-image's ``regionprops``: min inclusive, max exclusive) and mean probability.
:func:`stack_objects` joins the frames of a stack with ids unique in the stack.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "COLUMNS",
    "ObjectTable",
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


def object_dtype(n: int) -> np.dtype:
    """``uint16`` for up to 65535 objects, wider beyond (never wraps)."""
    for dt in (np.uint16, np.uint32):
        if n <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def check_class_map(class_map) -> np.ndarray:
    arr = np.asarray(class_map)
    if arr.ndim != 2:
        raise InvalidInputError(
            f"the class map must be 2D (rows, cols) of class ids, got shape {arr.shape}"
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


class ObjectTable:
    """One row per object; columns are numpy arrays (``table["area"]``).

    Columns: ``object`` (id in the object map), ``class``, ``area`` (pixels),
    ``centroid_row``, ``centroid_col``, ``bbox_min_row``, ``bbox_min_col`` (inclusive),
    ``bbox_max_row``, ``bbox_max_col`` (exclusive, as ``regionprops``), and
    ``mean_probability`` (of the object's class over its pixels; NaN when no
    probabilities were given). A table of several frames (:func:`stack_objects`) starts
    with a ``frame`` column. ``as_dict()`` suits napari's layer ``features``.
    """

    columns = COLUMNS

    def __init__(self, data: dict):
        missing = [c for c in COLUMNS if c not in data]
        if missing:
            raise InvalidInputError(f"an object table needs the columns {missing}")
        self.columns = tuple(data)
        self._data = {name: np.asarray(data[name]) for name in self.columns}

    def __len__(self) -> int:
        return len(self._data["object"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._data.items()}

    def counts(self) -> dict[int, int]:
        """``{class: number of objects}``."""
        classes, n = np.unique(self._data["class"], return_counts=True)
        return {int(c): int(k) for c, k in zip(classes, n, strict=True)}

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

    def __repr__(self) -> str:
        return f"ObjectTable({len(self)} objects)"


def csv_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value


BLOCK_PIXELS = 1 << 21  # object_table reads the maps in blocks of rows of about this size


def _row_blocks(shape):
    step = max(1, BLOCK_PIXELS // max(shape[1], 1))
    return [slice(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]


def object_table(objects, class_map, probabilities=None) -> ObjectTable:
    """Measure every object of an object map (as from :func:`split_objects`).

    An object's class is the class of its pixels in ``class_map`` (the most frequent
    one if they differ); its mean probability is that of its class over all its pixels.
    An object map with no objects gives an empty table. The maps are read in blocks of
    rows: nothing of the image's size is made.
    """
    obj = np.asarray(objects)
    cmap = check_class_map(class_map)
    if obj.shape != cmap.shape or obj.ndim != 2 or obj.dtype.kind not in "iu":
        raise InvalidInputError(
            f"objects must be an integer (H, W) map the shape of the class map {cmap.shape}, "
            f"got {obj.dtype} {obj.shape}"
        )
    n = int(obj.max()) if obj.size else 0
    k = int(cmap.max()) + 1 if cmap.size else 1
    area = np.zeros(n + 1, np.int64)
    sum_r, sum_c = np.zeros(n + 1), np.zeros(n + 1)
    pairs, counts = [], []
    cols = np.arange(obj.shape[1], dtype=np.float64)
    for rows in _row_blocks(obj.shape):
        o = obj[rows].astype(np.int64).ravel()
        area += np.bincount(o, minlength=n + 1)
        r = np.repeat(np.arange(rows.start, rows.stop, dtype=np.float64), obj.shape[1])
        sum_r += np.bincount(o, weights=r, minlength=n + 1)
        sum_c += np.bincount(o, weights=np.tile(cols, rows.stop - rows.start), minlength=n + 1)
        fg = o > 0
        pair, count = np.unique(o[fg] * k + cmap[rows].ravel()[fg], return_counts=True)
        pairs.append(pair)
        counts.append(count)
    ids = np.flatnonzero(area[1:]) + 1
    cls = _object_classes(np.concatenate(pairs), np.concatenate(counts), k, n)
    probs = check_probabilities(probabilities, [int(c) for c in np.unique(cls[ids])], cmap.shape)
    mean_p = np.full(n + 1, np.nan)
    if probs:
        sums = np.zeros(n + 1)
        for rows in _row_blocks(obj.shape):
            o = obj[rows].astype(np.int64).ravel()
            of = cls[o]
            for c, p in probs.items():
                sel = (o > 0) & (of == c)
                sums += np.bincount(o[sel], weights=p[rows].ravel()[sel], minlength=n + 1)
        with_p = ids[np.isin(cls[ids], list(probs))]
        mean_p[with_p] = sums[with_p] / area[with_p]
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(obj.astype(np.int64) if obj.dtype == np.uint64 else obj, max_label=n)
    bbox = np.array(
        [[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (boxes[i - 1] for i in ids)],
        dtype=np.int64,
    ).reshape(-1, 4)
    area_f = np.maximum(area, 1).astype(np.float64)
    return ObjectTable(
        {
            "object": ids.astype(np.int64),
            "class": cls[ids].astype(np.int64),
            "area": area[ids].astype(np.int64),
            "centroid_row": (sum_r / area_f)[ids],
            "centroid_col": (sum_c / area_f)[ids],
            "bbox_min_row": bbox[:, 0],
            "bbox_min_col": bbox[:, 1],
            "bbox_max_row": bbox[:, 2],
            "bbox_max_col": bbox[:, 3],
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
    ``f - 1``), and one table with a ``frame`` column first.

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
    columns = {"frame": [], **{c: [] for c in COLUMNS}}
    for f, (table, offset) in enumerate(zip(tables, stack_offsets(last), strict=True)):
        columns["frame"].append(np.full(len(table), f, dtype=np.int64))
        for c in COLUMNS:
            columns[c].append(table[c] + offset if c == "object" else table[c])
    return ObjectTable({k: np.concatenate(v) for k, v in columns.items()})
