"""Tracks through time: objects linked from frame to frame, one id per track.

:func:`track_objects` takes the object ids of a time-lapse, ``(T, Y, X)`` or
``(T, Z, Y, X)``, whose ids are unrelated from one frame to the next (as
:func:`~napari_sansa.core.objects.split_objects` gives them frame by frame), and returns
the same shape with one id per track, and a :class:`TrackTable`.

How objects are linked (numpy and scipy only; see ``docs/python.md``):

- **Frame to frame**: the objects of frame ``t - 1`` and ``t`` are paired by a maximum
  weight matching (scipy's ``linear_sum_assignment``, solved per connected group of
  candidates): a pair is a candidate when the two objects overlap or their centroids are
  less than ``max_distance`` apart (default: 1.5 times the median diameter of the
  objects of the two frames); its weight is ``1 + IoU - distance / max_distance``: more
  overlap and a nearer centroid both count. An object of frame ``t`` left without a
  partner starts a new track; one of frame ``t - 1`` ends its track (unless a gap is
  closed, below).
- **SAM2's propagation** (``moved=``, from :func:`~napari_sansa.propagate_objects`): each
  object of frame ``t - 1`` is measured where SAM2's memory attention carried its mask
  into frame ``t`` rather than where it was: the IoU is that of the carried mask with the
  objects of ``t``, the distance from its centroid. Objects that move farther than they
  overlap, or pass each other, are then linked by what SAM2 saw; an object SAM2 lost
  (an empty carried mask) is measured where it was.
- **Divisions** (``divisions=True``): an object of frame ``t`` left without a partner
  that is a candidate of an object of frame ``t - 1`` already paired, both being smaller
  than it and together the size of it (within :data:`DIVISION_AREA`), is its sister: the
  parent's track ends at ``t - 1`` and both daughters start new tracks whose ``parent``
  is the parent's track (the Cell Tracking Challenge's convention).
- **Merges**: two objects of frame ``t - 1`` that become one at ``t`` are paired with it
  as one object: the matching gives it to one of them (the larger overlap), whose track
  goes on; the other track ends (and may go on with gap closing if the two part again
  within ``gap`` frames). A track never has two parents.
- **Gaps** (``gap``: up to that many frames): a track that ended (not by dividing) is
  continued by an object that starts a new track up to ``gap + 1`` frames later, when
  their centroids are less than ``max_distance * (frames between)`` apart; the track
  then has no row for the missing frames (an empty frame in the middle of a track is
  such a gap).
- **Frame ranges with holes** (``frames=``: each frame's time index): no link crosses a
  hole in the time indices; the tracks end there and a warning says so
  (``TrackTable.breaks`` lists the holes).

Track ids are 1, 2, ... in order of the first frame of the track, then of the object's
id in that frame: the same input always gives the same ids. Frames are read one at a
time, twice (once to link, once to write the track ids): a memory map, a zarr or a dask
array is never loaded whole.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.measures import ColumnTable, object_dtype

__all__ = [
    "DIVISION_AREA",
    "TrackTable",
    "ctc_file_names",
    "ctc_tracks",
    "track_objects",
    "track_table",
    "write_ctc",
]

log = logging.getLogger(__name__)

#: a division's two daughters together have between these fractions of the parent's area
#: (each being smaller than the parent)
DIVISION_AREA = (0.5, 1.6)
#: the weight of a candidate pair never goes below this (an overlap is always a candidate)
_MIN_WEIGHT = 1e-3
#: how much the overlap (IoU) of two objects adds to the weight of their pair
_IOU_WEIGHT = 1.0
#: the default max_distance, in median diameters of the objects of the two frames
_REACH = 1.5


class TrackTable(ColumnTable):
    """One row per (track, frame); columns are numpy arrays (``table["track"]``).

    Columns: ``track`` (id in the track map), ``t`` (the frame's time index: its position
    in the stack, or ``frames[position]``), ``z`` (3D only), ``y``, ``x`` (centroid, in
    pixels), ``area`` (pixels, voxels in 3D), ``parent`` (the track it divided from, 0 if
    none), ``class`` (when classes were given) and ``object`` (the object's id in the
    input frame). Rows are sorted by ``t`` then ``track``.

    :meth:`summary` gives one row per track (``track``, ``start``, ``end``, ``parent``);
    :meth:`napari_tracks` the data and graph of a napari Tracks layer. ``breaks`` lists the
    holes of the frame range, ``(t before, t after)``, where every track ended.
    """

    key = "track"

    def __init__(self, data: dict, breaks=()):
        required = ("track", "t", "y", "x", "area", "parent")
        super().__init__(data, required, "a track table")
        self.breaks = [tuple(int(v) for v in b) for b in breaks]

    @property
    def ndim(self) -> int:
        """2 or 3: the frames' spatial dimensions."""
        return 3 if "z" in self._data else 2

    def tracks(self) -> np.ndarray:
        """The track ids, ascending."""
        return np.unique(self._data["track"])

    def summary(self) -> dict[str, np.ndarray]:
        """One row per track, by ascending id: ``track``, ``start`` and ``end`` (its first
        and last ``t``), ``parent`` (0 if none), ``frames`` (its number of rows: fewer than
        ``end - start + 1`` when a gap was bridged)."""
        track, t = self._data["track"], self._data["t"]
        ids, first, count = np.unique(track, return_index=True, return_counts=True)
        start = np.full(len(ids), np.iinfo(np.int64).max, np.int64)
        end = np.full(len(ids), np.iinfo(np.int64).min, np.int64)
        pos = np.searchsorted(ids, track)
        np.minimum.at(start, pos, t)
        np.maximum.at(end, pos, t)
        return {
            "track": ids.astype(np.int64),
            "start": start,
            "end": end,
            "parent": self._data["parent"][first].astype(np.int64),
            "frames": count.astype(np.int64),
        }

    def graph(self) -> dict[int, list[int]]:
        """``{track: [parent]}`` for every track with a parent (napari's Tracks graph)."""
        s = self.summary()
        return {int(k): [int(p)] for k, p in zip(s["track"], s["parent"], strict=True) if p}

    def napari_tracks(self) -> tuple[np.ndarray, dict[int, list[int]]]:
        """``(data, graph)`` for ``napari.layers.Tracks``: data rows ``track, t, (z,) y, x``
        sorted by track then t."""
        axes = ["track", "t", *(["z"] if self.ndim == 3 else []), "y", "x"]
        data = np.stack([self._data[a].astype(np.float64) for a in axes], axis=1)
        order = np.lexsort((self._data["t"], self._data["track"]))
        return data[order], self.graph()

    def __repr__(self) -> str:
        n = len(np.unique(self._data["track"])) if len(self) else 0
        return f"TrackTable({n} tracks, {len(self)} rows)"


# -- per-frame measurements -----------------------------------------------------------------


@dataclass
class _Frame:
    """The objects of one frame: ids (ascending), area, centroid (pixels), class, and the
    track each gets."""

    index: int
    ids: np.ndarray
    area: np.ndarray
    centroid: np.ndarray  # (n, d) pixels
    cls: np.ndarray | None
    compact: np.ndarray | None = None  # (H*W,) compact index + 1 per pixel (0 background)
    track: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.track is None:
            self.track = np.zeros(len(self.ids), np.int64)


def read_frame(array, i: int) -> np.ndarray:
    frame = array[i]
    if hasattr(frame, "compute"):  # a dask array
        frame = frame.compute()
    return np.asarray(frame)


def _area_centroid(compact: np.ndarray, n: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count and centroid of objects ``1 .. n`` of a flat ``compact`` map of
    ``shape``."""
    area = np.bincount(compact, minlength=n + 1)[1:].astype(np.int64)
    cent = np.zeros((n, len(shape)))
    for axis, size in enumerate(shape):
        along = [1] * len(shape)
        along[axis] = size
        coord = np.broadcast_to(np.arange(size, dtype=np.float64).reshape(along), shape)
        sums = np.bincount(compact, weights=coord.ravel(), minlength=n + 1)[1:]
        cent[:, axis] = sums / np.maximum(area, 1)
    return area, cent


@dataclass
class _Moved:
    """Frame ``t - 1``'s objects where SAM2 carried them in frame ``t`` (``moved=``):
    ``compact`` in the previous frame's compact indices, their ``area`` and
    ``centroid``."""

    compact: np.ndarray
    area: np.ndarray
    centroid: np.ndarray


def _measure_moved(frame: np.ndarray, prev: _Frame, index: int) -> _Moved:
    flat = frame.ravel()
    n = len(prev.ids)
    compact = np.zeros(flat.shape, np.int64)
    fg = flat != 0
    if fg.any():
        values = flat[fg].astype(np.int64, copy=False)
        pos = np.searchsorted(prev.ids, values)
        known = (pos < n) & (prev.ids[np.minimum(pos, max(n - 1, 0))] == values) if n else pos < 0
        if not known.all():
            bad = int(values[~known][0])
            raise InvalidInputError(
                f"moved[{index}] holds id {bad}, which no object of the frame before has: "
                "give the moved stack that propagate_objects made of these objects"
            )
        compact[fg] = pos + 1
    area, cent = _area_centroid(compact, n, frame.shape)
    return _Moved(compact, area, cent)


def measure_frame(frame: np.ndarray, cls_frame, index: int) -> _Frame:
    """The objects of one frame (ids, area, centroid, class) for the linking, and for
    :func:`~napari_sansa.core.track_edits.plan_repaint` (frames painted by hand)."""
    flat = frame.ravel()
    if flat.size and flat.dtype.kind == "i" and flat.min() < 0:
        raise InvalidInputError(
            f"frame {index} has negative object ids: use 0 for background, 1, 2, ..."
        )
    top = int(flat.max()) if flat.size else 0
    if top < max(4 * flat.size, 1 << 16):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lookup = np.zeros(top + 1, np.int64)
        lookup[ids] = np.arange(1, len(ids) + 1)
        compact = lookup[flat]
    else:  # sparse large ids
        ids, inverse = np.unique(flat, return_inverse=True)
        compact = inverse.astype(np.int64)
        if ids.size and ids[0] == 0:
            ids = ids[1:]
        else:
            compact += 1
    n = len(ids)
    area, cent = _area_centroid(compact, n, frame.shape)
    cls = None
    if isinstance(cls_frame, Mapping):
        cls = np.array([cls_frame.get(int(i), 0) for i in ids], np.int64).reshape(-1)
    elif cls_frame is not None:
        c = np.asarray(cls_frame).ravel().astype(np.int64)
        k = int(c.max()) + 1 if c.size else 1
        fg = compact > 0
        pair, count = np.unique(compact[fg] * k + c[fg], return_counts=True)
        obj, cl = pair // k, pair % k
        order = np.lexsort((-count, obj))
        obj, cl = obj[order], cl[order]
        first = np.r_[True, obj[1:] != obj[:-1]] if obj.size else np.zeros(0, bool)
        cls = np.zeros(n, np.int64)
        cls[obj[first] - 1] = cl[first]
    return _Frame(index, ids.astype(np.int64), area, cent, cls, compact)


# -- matching ---------------------------------------------------------------------------


def _max_weight_matching(a, b, w, n_a, n_b) -> list[tuple[int, int]]:
    """A maximum weight matching of the bipartite graph with edges ``(a[k], b[k])`` of
    weight ``w[k] > 0``, solved per connected group of edges (small dense problems);
    returns the pairs in ascending order of ``a``."""
    if not len(a):
        return []
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a)), (a, n_a + b)), shape=(n_a + n_b,) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[a]
    pairs = []
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    for group in np.split(order, bounds):
        ga, gb, gw = a[group], b[group], w[group]
        ua, ia = np.unique(ga, return_inverse=True)
        ub, ib = np.unique(gb, return_inverse=True)
        m = np.zeros((len(ua), len(ub)))
        np.maximum.at(m, (ia, ib), gw)
        rows, cols = linear_sum_assignment(m, maximize=True)
        pairs += [(int(ua[r]), int(ub[c])) for r, c in zip(rows, cols, strict=True) if m[r, c] > 0]
    return sorted(pairs)


def _overlaps(prev, cur: _Frame):
    """``(a, b, pixels)`` compact indices (from 0) of the overlapping objects of ``prev``
    (a :class:`_Frame` or :class:`_Moved`) and ``cur``."""
    fg = (prev.compact > 0) & (cur.compact > 0)
    m = len(cur.ids) + 1
    codes = prev.compact[fg] * m + cur.compact[fg]
    pair, count = np.unique(codes, return_counts=True)
    return pair // m - 1, pair % m - 1, count


def _diameter(area: np.ndarray, voxel: float, ndim: int) -> np.ndarray:
    size = area * voxel
    if ndim == 3:
        return 2 * np.cbrt(3 * size / (4 * np.pi))
    return 2 * np.sqrt(size / np.pi)


def _candidates(prev: _Frame, cur: _Frame, spacing, reach: float | None, overlap: bool, moved=None):
    """The candidate pairs ``(a, b, weight)`` of two frames (see the module's doc);
    ``reach``: the largest centroid distance (None: :data:`_REACH` median diameters);
    ``moved``: prev's objects where SAM2 carried them (a :class:`_Moved`): their
    centroids and overlaps there count instead of prev's, for the objects it kept."""
    from scipy.spatial import cKDTree

    ndim = cur.centroid.shape[1]
    if reach is None:
        voxel = float(np.prod(spacing))
        reach = _REACH * float(np.median(_diameter(np.r_[prev.area, cur.area], voxel, ndim)))
    centroid = prev.centroid
    if moved is not None:
        kept = moved.area > 0
        centroid = np.where(kept[:, None], moved.centroid, prev.centroid)
    pa, pb = centroid * spacing, cur.centroid * spacing
    dist = cKDTree(pa).sparse_distance_matrix(cKDTree(pb), reach, output_type="coo_matrix")
    weight = {}
    for a, b, d in zip(dist.row, dist.col, dist.data, strict=True):
        weight[(int(a), int(b))] = 1.0 - d / reach
    if overlap or moved is not None:
        oa, ob, count = _overlaps(prev, cur)
        iou = count / (prev.area[oa] + cur.area[ob] - count)
        if moved is not None:  # the objects SAM2 kept: their overlap where it carried them
            lost = ~kept[oa]
            ma, mb, mcount = _overlaps(moved, cur)
            miou = mcount / (moved.area[ma] + cur.area[mb] - mcount)
            if not overlap:
                lost[:] = False
            oa = np.r_[oa[lost], ma]
            ob = np.r_[ob[lost], mb]
            iou = np.r_[iou[lost], miou]
        for a, b, v in zip(oa, ob, iou, strict=True):
            key = (int(a), int(b))
            if key not in weight:
                d = float(np.linalg.norm(pa[a] - pb[b]))
                weight[key] = 1.0 - d / reach
            weight[key] += _IOU_WEIGHT * float(v)
    if not weight:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    keys = sorted(weight)
    a = np.array([k[0] for k in keys], np.int64)
    b = np.array([k[1] for k in keys], np.int64)
    w = np.maximum(np.array([weight[k] for k in keys]), _MIN_WEIGHT)
    if prev.cls is not None and cur.cls is not None:  # never link across classes
        same = prev.cls[a] == cur.cls[b]
        a, b, w = a[same], b[same], w[same]
    return a, b, w


# -- the linker -------------------------------------------------------------------------------


def _check_positive(name, value, *, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(value):
        raise InvalidInputError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_inputs(objects, spacing, gap, frames, classes, out):
    shape = tuple(getattr(objects, "shape", ()))
    if len(shape) not in (3, 4):
        raise InvalidInputError(
            f"tracks need a T axis: objects must be (T, Y, X) or (T, Z, Y, X) object ids, got "
            f"shape {shape}; a single frame or z-stack has nothing to track"
        )
    dtype = np.dtype(getattr(objects, "dtype", np.int64))
    if dtype.kind not in "iu":
        raise InvalidInputError(
            f"objects must hold integer object ids (0 = background), got dtype {dtype}"
        )
    nd = len(shape) - 1
    if spacing is None:
        spacing = (1.0,) * nd
    spacing = tuple(np.atleast_1d(np.asarray(spacing, dtype=np.float64)).tolist())
    if len(spacing) != nd:
        raise InvalidInputError(
            f"spacing must give one size per spatial axis ({nd}: "
            f"{'(z, y, x)' if nd == 3 else '(y, x)'}), got {len(spacing)}"
        )
    for s in spacing:
        _check_positive("every voxel size of spacing", s, allow_none=False)
    if isinstance(gap, bool) or not isinstance(gap, numbers.Integral) or gap < 0:
        raise InvalidInputError(f"gap must be a whole number of frames >= 0, got {gap!r}")
    n = shape[0]
    if frames is None:
        frames = np.arange(n, dtype=np.int64)
    else:
        frames = np.asarray(frames)
        if frames.shape != (n,) or frames.dtype.kind not in "iu":
            raise InvalidInputError(
                f"frames must give the time index of each of the {n} frames (whole numbers), "
                f"got {frames.dtype} {frames.shape}"
            )
        frames = frames.astype(np.int64)
        if n > 1 and np.any(np.diff(frames) <= 0):
            raise InvalidInputError("frames must be strictly increasing time indices")
    if isinstance(classes, Mapping):
        pass  # {object id: class}, ids unique in the stack
    elif classes is not None and tuple(getattr(classes, "shape", ())) != shape:
        raise InvalidInputError(
            f"classes must be a class map of the objects' shape {shape}, got "
            f"{tuple(getattr(classes, 'shape', ()))}"
        )
    if out is not None:
        oshape = tuple(getattr(out, "shape", ()))
        odt = np.dtype(getattr(out, "dtype", np.float64))
        if oshape != shape or odt.kind not in "iu":
            raise InvalidInputError(
                f"out must be an integer array of the objects' shape {shape}, got {odt} {oshape}"
            )
    return np.asarray(spacing), int(gap), frames


class _Linker:
    def __init__(self, spacing, reach, gap, divisions, overlap):
        self.spacing, self.reach, self.gap = spacing, reach, gap
        self.divisions, self.overlap = divisions, overlap
        self.next_id = 1
        self.parent: dict[int, int] = {}
        self.recent: list[tuple[int, int, np.ndarray, float, int]] = []  # ended tracks

    def new_track(self, parent: int = 0) -> int:
        tid = self.next_id
        self.next_id += 1
        self.parent[tid] = parent
        return tid

    def link(self, prev: _Frame | None, cur: _Frame, hole: bool, moved=None) -> None:
        """Give every object of ``cur`` its track, from ``prev`` (the frame before;
        None when there is none; ``moved``: its objects where SAM2 carried them) and the
        tracks that ended recently."""
        n = len(cur.ids)
        track = np.zeros(n, np.int64)
        parent_of = np.zeros(n, np.int64)  # a daughter's parent track
        ended = []  # objects of prev whose track ends at prev (not by dividing)
        if hole:
            self.recent = []
        if prev is not None and not hole and len(prev.ids) and n:
            a, b, w = _candidates(prev, cur, self.spacing, self.reach, self.overlap, moved)
            pairs = _max_weight_matching(a, b, w, len(prev.ids), n)
            matched_a = dict(pairs)
            for pa, pb in pairs:
                track[pb] = prev.track[pa]
            if self.divisions:
                self._divisions(prev, cur, a, b, w, matched_a, track, parent_of)
            divided = {int(prev.track[pa]) for pa in range(len(prev.ids))} & set(
                parent_of[parent_of > 0].tolist()
            )
            ended = [
                i
                for i in range(len(prev.ids))
                if i not in matched_a and int(prev.track[i]) not in divided
            ]
        elif prev is not None and not hole:
            ended = list(range(len(prev.ids)))
        # tracks that ended at prev may go on after a gap
        if prev is not None and not hole:
            for i in ended:
                cls = -1 if prev.cls is None else int(prev.cls[i])
                self.recent.append(
                    (int(prev.track[i]), prev.index, prev.centroid[i], float(prev.area[i]), cls)
                )
        self.recent = [r for r in self.recent if cur.index - r[1] - 1 <= self.gap]
        if self.gap and self.recent and n:
            self._close_gaps(cur, track, parent_of)
        for i in range(n):
            if track[i] == 0:
                track[i] = self.new_track(int(parent_of[i]))
        cur.track = track

    def _divisions(self, prev, cur, a, b, w, matched_a, track, parent_of):
        free = track == 0
        keep = free[b] & np.isin(a, list(matched_a))
        if not keep.any():
            return
        order = np.lexsort((b[keep], a[keep], -w[keep]))
        used_parent = set()
        lo, hi = DIVISION_AREA
        for pa, pb in zip(a[keep][order], b[keep][order], strict=True):
            pa, pb = int(pa), int(pb)
            if pa in used_parent or track[pb] != 0 or parent_of[pb]:
                continue
            sister = matched_a[pa]
            parent_area = prev.area[pa]
            ar, asis = cur.area[pb], cur.area[sister]
            if max(ar, asis) >= parent_area or not lo <= (ar + asis) / parent_area <= hi:
                continue
            used_parent.add(pa)
            ptrack = int(prev.track[pa])
            track[sister] = 0
            parent_of[sister] = parent_of[pb] = ptrack

    def _close_gaps(self, cur, track, parent_of):
        free = np.flatnonzero((track == 0) & (parent_of == 0))
        if not free.size:
            return
        from scipy.spatial import cKDTree

        reach = self.reach
        if reach is None:
            voxel = float(np.prod(self.spacing))
            areas = np.r_[cur.area, [r[3] for r in self.recent]]
            reach = _REACH * float(np.median(_diameter(areas, voxel, cur.centroid.shape[1])))
        pts = np.array([r[2] for r in self.recent]) * self.spacing
        steps = np.array([cur.index - r[1] for r in self.recent], np.float64)
        far = reach * steps.max()
        dist = cKDTree(pts).sparse_distance_matrix(
            cKDTree(cur.centroid[free] * self.spacing), far, output_type="coo_matrix"
        )
        a, bb, d = dist.row.astype(np.int64), dist.col.astype(np.int64), dist.data
        limit = reach * steps[a]
        w = 1.0 - d / limit
        ok = w > 0
        if cur.cls is not None:
            ok &= np.array([self.recent[i][4] for i in a], np.int64) == cur.cls[free[bb]]
        a, bb, w = a[ok], bb[ok], w[ok]
        pairs = _max_weight_matching(a, bb, w, len(self.recent), len(free))
        for ra, fb in pairs:
            track[free[fb]] = self.recent[ra][0]
        gone = {ra for ra, _ in pairs}
        self.recent = [r for i, r in enumerate(self.recent) if i not in gone]


def track_objects(
    objects,
    *,
    max_distance: float | None = None,
    gap: int = 1,
    divisions: bool = True,
    spacing=None,
    frames=None,
    classes=None,
    overlap: bool = True,
    moved=None,
    out=None,
):
    """Link the objects of a time-lapse into tracks (see the module's doc for how).

    ``objects``: ``(T, Y, X)`` or ``(T, Z, Y, X)`` integer object ids (0 = background), ids
    unrelated from frame to frame; a numpy array, ``np.memmap``, zarr or dask array, read
    one frame at a time; or the predictions of ``segment`` on the frames of a time-lapse
    (their ``objects``, and their ``labels`` as ``classes``).
    ``max_distance``: the farthest a centroid moves between two frames
    (in the units of ``spacing``; None: 1.5 times the median diameter of the objects of
    the two frames). ``gap``: how many missing frames a track may bridge (0: none).
    ``divisions``: find divisions (one parent, two daughters). ``spacing``: the voxel size
    ``(y, x)`` or ``(z, y, x)`` (distances and diameters are measured with it).
    ``frames``: each frame's time index (strictly increasing; a hole ends every track).
    ``classes``: a class map of the objects' shape, read frame by frame (each object gets
    the class of most of its pixels), or ``{object id: class}`` when the ids are unique in
    the stack (as :func:`~napari_sansa.stack_objects` makes them): the table gets a
    ``class`` column, and objects of different classes are never linked.
    ``overlap``: use the objects' overlap (False: centroids only).
    ``moved``: where SAM2 carries each object into the next frame, as
    :func:`~napari_sansa.propagate_objects` gives it (the objects' shape; ``moved[t]``:
    the ids of frame ``t - 1``'s objects in frame ``t``, read frame by frame): an
    object's overlap with the next frame's objects and its centroid are taken where SAM2
    carried it (objects SAM2 lost fall back on their own overlap and centroid).
    ``out``: an integer array of the objects' shape (e.g. an ``np.memmap`` or a zarr
    array, for stacks larger than memory) that receives the track ids; None: a new numpy
    array of the smallest unsigned type that holds them (``uint16``, wider with more
    tracks: never wraps).

    Returns ``(tracks, table)``: the track ids (``out`` when given) and a
    :class:`TrackTable`.
    """
    if are_predictions(objects):
        preds = list(objects)
        objects = PredictionFrames(preds, "objects")
        if classes is None:
            classes = PredictionFrames(preds, "labels")
    spacing_arr, gap, times = _check_inputs(objects, spacing, gap, frames, classes, out)
    if moved is not None:
        mshape = tuple(getattr(moved, "shape", ()))
        mdt = np.dtype(getattr(moved, "dtype", np.float64))
        if mshape != tuple(objects.shape) or mdt.kind not in "iu":
            raise InvalidInputError(
                f"moved must be integer ids of the objects' shape {tuple(objects.shape)} (as "
                f"propagate_objects gives them), got {mdt} {mshape}"
            )
    max_distance = _check_positive("max_distance", max_distance)
    if not isinstance(divisions, (bool, np.bool_)):
        raise InvalidInputError(f"divisions must be True or False, got {divisions!r}")
    shape = tuple(objects.shape)
    linker = _Linker(spacing_arr, max_distance, gap, bool(divisions), bool(overlap))
    breaks = []
    prev = None
    rows = []  # per frame: (ids, tracks, centroid, area, cls)
    for i in range(shape[0]):
        frame = read_frame(objects, i)
        if classes is None or isinstance(classes, Mapping):
            cls_frame = classes
        else:
            cls_frame = read_frame(classes, i)
        cur = measure_frame(frame, cls_frame, int(times[i]))
        del frame, cls_frame
        hole = i > 0 and times[i] - times[i - 1] > 1
        if hole:
            breaks.append((int(times[i - 1]), int(times[i])))
        carried = None
        if moved is not None and prev is not None and not hole:
            carried = _measure_moved(read_frame(moved, i), prev, i)
        linker.link(prev, cur, hole, carried)
        rows.append((cur.ids, cur.track, cur.centroid, cur.area, cur.cls))
        if prev is not None:
            prev.compact = None
        prev = cur
    if breaks:
        warnings.warn(
            "the frame range has holes (" + ", ".join(f"{a} -> {b}" for a, b in breaks) + "): "
            "every track ends at a hole and new tracks start after it",
            stacklevel=2,
        )
    n_tracks = linker.next_id - 1
    dtype = object_dtype(n_tracks)
    if out is None:
        out = np.zeros(shape, dtype=dtype)
    elif np.iinfo(np.dtype(out.dtype)).max < n_tracks:
        raise InvalidInputError(
            f"out is {np.dtype(out.dtype)}, too narrow for the {n_tracks} tracks: give a "
            f"{dtype} array or wider"
        )
    for i, (ids, track, *_) in enumerate(rows):
        frame = read_frame(objects, i)
        lookup = np.zeros(int(ids[-1]) + 1 if ids.size else 1, dtype=np.dtype(out.dtype))
        lookup[ids] = track
        flat = frame.ravel()
        inside = flat < lookup.size
        page = np.zeros(flat.shape, dtype=lookup.dtype)
        page[inside] = lookup[flat[inside]]
        out[i] = page.reshape(frame.shape)
    table = _table(rows, times, linker.parent, classes is not None, len(shape) - 1, breaks)
    return out, table


def are_predictions(objects) -> bool:
    return (
        isinstance(objects, (list, tuple))
        and len(objects) > 0
        and all(hasattr(p, "objects") and hasattr(p, "labels") for p in objects)
    )


class PredictionFrames:
    """The ``objects`` (or ``labels``) of a list of predictions, one frame at a time."""

    def __init__(self, preds, attr: str):
        shapes = {tuple(p.shape) for p in preds}
        if len(shapes) > 1:
            raise InvalidInputError(
                f"the predictions have different shapes {sorted(shapes)}: the frames of a "
                "time-lapse have one size"
            )
        self.preds, self.attr = preds, attr
        self.shape = (len(preds), *shapes.pop())
        self.dtype = np.dtype(np.uint32)

    def __getitem__(self, i):
        return getattr(self.preds[i], self.attr)


def track_table(tracks, parents=None, *, frames=None, classes=None) -> TrackTable:
    """The :class:`TrackTable` of a track map: ``(T, Y, X)`` or ``(T, Z, Y, X)`` ids that
    are the same for an object in every frame (as :func:`track_objects` gives them, or
    after corrections: two tracks merged, one split at a frame), read one frame at a time.

    ``parents``: ``{track: parent track}`` (others: 0), e.g. ``dict(zip(s["track"],
    s["parent"]))`` of a ``summary()``; ``frames``: each frame's time index; ``classes``:
    as in :func:`track_objects`. The table has the columns of :func:`track_objects`'
    but ``object`` (the ids are the tracks)."""
    _, _, times = _check_inputs(tracks, None, 0, frames, classes, None)
    parents = {int(k): int(v) for k, v in (parents or {}).items()}
    rows = []
    for i in range(tracks.shape[0]):
        if classes is None or isinstance(classes, Mapping):
            cls_frame = classes
        else:
            cls_frame = read_frame(classes, i)
        cur = measure_frame(read_frame(tracks, i), cls_frame, int(times[i]))
        rows.append((cur.ids, cur.ids, cur.centroid, cur.area, cur.cls))
    ids = {int(k) for r in rows for k in r[0]}
    lookup = {k: parents.get(k, 0) for k in ids}
    table = _table(rows, times, lookup, classes is not None, len(tracks.shape) - 1, [])
    data = table.as_dict()
    del data["object"]
    return TrackTable(data)


def _table(rows, times, parents, with_class, nd, breaks) -> TrackTable:
    cols = {k: [] for k in ("track", "t", "z", "y", "x", "area", "parent", "class", "object")}
    for i, (ids, track, cent, area, cls) in enumerate(rows):
        order = np.argsort(track, kind="stable")
        cols["track"].append(track[order])
        cols["t"].append(np.full(len(ids), times[i], np.int64))
        for k, axis in enumerate(["z", "y", "x"][3 - nd :]):
            cols[axis].append(cent[order, k])
        cols["area"].append(area[order])
        cols["parent"].append(np.array([parents[int(t)] for t in track[order]], np.int64))
        if with_class:
            cols["class"].append(cls[order])
        cols["object"].append(ids[order])
    empty = {"track": np.int64, "t": np.int64, "area": np.int64, "parent": np.int64}
    data = {}
    for k, v in cols.items():
        if (k == "z" and nd == 2) or (k == "class" and not with_class):
            continue
        data[k] = np.concatenate(v) if v else np.zeros(0, empty.get(k, np.float64))
        if k in empty or k in ("class", "object"):
            data[k] = data[k].astype(np.int64)
    return TrackTable(data, breaks)


# -- Cell Tracking Challenge format -------------------------------------------------------


def ctc_tracks(table: TrackTable, positions=None):
    """The Cell Tracking Challenge's view of ``table``: ``(lines, labels)``.

    CTC tracks are continuous in time: a track that bridges a gap is cut there, its part
    after the gap a new CTC track whose parent is the part before it (a division's
    daughters have the parent's last part as parent). ``lines``: ``(N, 4)`` int64 rows
    ``L B E P`` (label, first and last frame, parent label; frames are positions in the
    stack, 0 first). ``labels``: ``{(track, position): CTC label}``. ``positions``: the
    ``t`` of each position of the stack (default ``t`` is the position).
    """
    track, t = table["track"], table["t"]
    if positions is None:
        pos = t.astype(np.int64)
    else:
        positions = np.asarray(positions, np.int64)
        pos = np.searchsorted(positions, t)
    summary = table.summary()
    parent = dict(zip(summary["track"].tolist(), summary["parent"].tolist(), strict=True))
    order = np.lexsort((pos, track))
    next_label = int(summary["track"].max()) + 1 if len(summary["track"]) else 1
    lines, labels, last_label = [], {}, {}
    k = 0
    while k < len(order):
        tid = int(track[order[k]])
        j = k
        while j < len(order) and track[order[j]] == tid:
            j += 1
        ps = pos[order[k:j]]
        cuts = np.flatnonzero(np.diff(ps) > 1) + 1
        label_before = 0
        for n, seg in enumerate(np.split(ps, cuts)):
            if n == 0:
                label = tid
            else:
                label = next_label
                next_label += 1
            lines.append([label, int(seg[0]), int(seg[-1]), label_before])
            for p in seg:
                labels[(tid, int(p))] = label
            label_before = label
        last_label[tid] = label_before
        k = j
    out = np.array(lines, np.int64).reshape(-1, 4)
    first_of = {int(r[0]): i for i, r in enumerate(out)}
    for tid, p in parent.items():  # a daughter's parent: the parent's last part
        if p:
            out[first_of[tid], 3] = last_label[p]
    return out[np.argsort(out[:, 0], kind="stable")], labels


def ctc_file_names(n_frames: int) -> list[str]:
    """The files :func:`write_ctc` writes for ``n_frames`` frames, in the order it writes
    them: ``mask000.tif``, ... (``maskTTTT`` from 1000 frames on), then ``res_track.txt``."""
    width = max(3, len(str(max(n_frames - 1, 0))))
    return [f"mask{i:0{width}d}.tif" for i in range(n_frames)] + ["res_track.txt"]


def write_ctc(folder, tracks, table: TrackTable, positions=None) -> list:
    """Write ``tracks`` and ``table`` (from :func:`track_objects`) in the Cell Tracking
    Challenge result format in ``folder``: ``res_track.txt`` (``L B E P`` lines) and one
    ``uint16`` mask per frame, ``mask000.tif``, ``mask001.tif``, ... (``maskTTTT`` from
    1000 frames on; a 3D frame is one multi-page TIFF). Frames are read one at a time;
    each file is written atomically. Returns the paths written.

    More than 65535 CTC tracks cannot be written (the format's masks are 16-bit).
    """
    from pathlib import Path

    from napari_sansa.core.atomic import atomic_write, write_text_atomic

    folder = Path(folder)
    lines, labels = ctc_tracks(table, positions)
    if len(lines) and lines[:, 0].max() > np.iinfo(np.uint16).max:
        raise InvalidInputError(
            f"{int(lines[:, 0].max())} tracks in the Cell Tracking Challenge format, whose "
            "masks are 16-bit (at most 65535 tracks): track a shorter or smaller stack"
        )
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    n = int(tracks.shape[0])
    names = ctc_file_names(n)
    by_pos: dict[int, list] = {}
    for (tid, p), label in labels.items():
        by_pos.setdefault(p, []).append((tid, label))
    written = []
    for i in range(n):
        frame = read_frame(tracks, i)
        pairs = by_pos.get(i, [])
        top = max([int(frame.max()) if frame.size else 0, *(tid for tid, _ in pairs)])
        lookup = np.zeros(top + 1, np.uint16)
        for tid, label in pairs:
            lookup[tid] = label
        mask = lookup[frame]
        path = folder / names[i]
        with atomic_write(path) as tmp:
            tifffile.imwrite(tmp, mask, compression="zlib", photometric="minisblack")
        written.append(path)
    text = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in lines.tolist())
    write_text_atomic(folder / "res_track.txt", text)
    written.append(folder / "res_track.txt")
    return written
