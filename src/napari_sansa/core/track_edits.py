"""Corrections of tracks: merge two tracks, split one at a frame (numpy only).

A track image holds one id per track in every frame (``tracks[t]``: frame ``t``, a
(Y, X) plane or a (Z, Y, X) volume, 0 the background); its table has one row per
(track, frame), sorted by frame then track, with at least the columns ``track``, ``t``
and ``parent`` (the track it divided from, 0 for none, the same on every row of a
track), as
:func:`napari_sansa.track_objects` gives them; other columns (centroid, area, ...)
go along with their rows.

- :func:`merge_tracks`: the later track (by its first frame) becomes part of the
  earlier one: its pixels and rows take the earlier one's id. Two tracks that are both
  in some frame cannot be merged (a track is one object per frame): an error says
  which frames, and nothing changes.
- :func:`split_track`: from a frame on, a track gets a new id (one more than the
  largest); the daughters of the track (its divisions, after its end) follow the new
  part, which has no parent.

Both return the new image and table and leave their inputs as they were.
:func:`plan_merge` and :func:`plan_split` give the same change as a :class:`TrackEdit`
without an image (the table, and which ids change in which frames), for callers that
update an image of their own frame by frame (napari's layer, with undo).

- :func:`plan_repaint`: the table after the pixels of some frames were changed by hand
  (painted, erased, filled): only those frames are measured again (centroid, area); a
  track id painted on a frame where it had no row gets one, a track erased from a frame
  loses its row there; parents stay, but a track erased from every frame is dropped and
  its daughters lose their parent.
- :class:`TableChange` (:func:`table_change`, :func:`apply_change`): what a change did
  to a table (the rows of the frames it touched and the parents it changed), to undo
  and redo it without keeping copies of the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "Repaint",
    "TableChange",
    "TrackEdit",
    "TrackEditError",
    "apply_change",
    "apply_relabel",
    "merge_tracks",
    "plan_merge",
    "plan_repaint",
    "plan_split",
    "split_track",
    "table_change",
    "track_frames",
]


class TrackEditError(InvalidInputError):
    """A track correction that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class TrackEdit:
    """One correction: ``table`` (the columns after it, a dict of numpy arrays),
    ``relabel`` ((frame, old id, new id) for every frame whose pixels change),
    ``track`` (the id that remains: the merged track, or the split track's first part),
    ``new`` (the split's new id; for a merge the id that is gone), ``unlinked`` (tracks
    whose parent link the change removed) and ``message`` (what was done, in a sentence)."""

    table: dict
    relabel: tuple[tuple[int, int, int], ...]
    track: int
    new: int
    unlinked: tuple[int, ...] = ()
    message: str = ""


def _columns(table) -> dict[str, np.ndarray]:
    data = table.as_dict() if hasattr(table, "as_dict") else dict(table)
    data = {k: np.asarray(v).copy() for k, v in data.items()}
    missing = [c for c in ("track", "t", "parent") if c not in data]
    if missing:
        raise TrackEditError(f"a track table needs the columns {missing}")
    return data


def _like(table, columns: dict):
    """The new columns as the kind of table given (a dict stays a dict)."""
    if isinstance(table, dict):
        return columns
    return type(table)(columns)


def track_frames(table, track: int) -> np.ndarray:
    """The frames (sorted) in which ``track`` has a row."""
    data = table if isinstance(table, dict) else _columns(table)
    return np.unique(np.asarray(data["t"])[np.asarray(data["track"]) == int(track)])


def _frames_text(frames) -> str:
    frames = [int(f) for f in frames]
    if len(frames) == 1:
        return f"frame {frames[0]}"
    shown = ", ".join(map(str, frames[:6])) + (", ..." if len(frames) > 6 else "")
    return f"frames {shown}"


def _require(data: dict, track: int) -> np.ndarray:
    rows = data["track"] == int(track)
    if not rows.any():
        raise TrackEditError(f"there is no track {int(track)}: choose one of the table's tracks")
    return rows


def _sorted(data: dict) -> dict:
    order = np.lexsort((data["track"], data["t"]))  # by frame, then track
    return {k: v[order] for k, v in data.items()}


def plan_merge(table, a: int, b: int) -> TrackEdit:
    """Merge tracks ``a`` and ``b`` (see the module): the table after it and the pixels
    that change. :class:`TrackEditError` when they are the same track, one does not
    exist, or both are in some frame (nothing changes)."""
    data = _columns(table)
    a, b = int(a), int(b)
    if a == b:
        raise TrackEditError(f"track {a} was chosen twice: choose two different tracks to merge")
    rows_a, rows_b = _require(data, a), _require(data, b)
    frames_a, frames_b = np.unique(data["t"][rows_a]), np.unique(data["t"][rows_b])
    both = np.intersect1d(frames_a, frames_b)
    if both.size:
        raise TrackEditError(
            # what to do first: the dock's status shows the first three short lines
            f"tracks {a} and {b} cannot be merged: split one of them first (or merge other "
            f"tracks); they are both in {_frames_text(both)} and a track is one object per frame"
        )
    first, later = (a, b) if (frames_a[0], a) < (frames_b[0], b) else (b, a)
    rows_later = data["track"] == later
    parent_of_later = int(data["parent"][rows_later][0])
    data["track"][rows_later] = first
    data["parent"][rows_later] = int(data["parent"][data["track"] == first][0])
    data["parent"][data["parent"] == later] = first  # the later one's daughters follow
    data["parent"][(data["track"] == first) & (data["parent"] == first)] = 0  # never its own
    # a daughter must begin after its parent's last frame: the merged track may now go on
    end = int(data["t"][data["track"] == first].max())
    unlinked = []
    for d in np.unique(data["track"][data["parent"] == first]):
        rows = data["track"] == d
        if int(data["t"][rows].min()) <= end:
            data["parent"][rows] = 0
            unlinked.append(int(d))
    frames_later = frames_b if later == b else frames_a
    relabel = tuple((int(t), later, first) for t in frames_later)
    message = f"track {later} merged into track {first} ({_frames_text(frames_later)})"
    if parent_of_later and parent_of_later != first:
        message += f"; its link to parent {parent_of_later} is gone"
    if unlinked:
        message += (
            f"; track(s) {', '.join(map(str, unlinked))} no longer divide from it (they begin "
            "before it ends)"
        )
    return TrackEdit(_sorted(data), relabel, first, later, tuple(unlinked), message)


def plan_split(table, track: int, frame: int, new_id: int | None = None) -> TrackEdit:
    """Split ``track`` at ``frame`` (see the module): its rows from ``frame`` on get
    ``new_id`` (default: one more than the largest track id). :class:`TrackEditError`
    when the track does not exist or has no frame before ``frame`` or none from it."""
    data = _columns(table)
    track, frame = int(track), int(frame)
    rows = _require(data, track)
    frames = np.unique(data["t"][rows])
    if frame <= frames[0] or frame > frames[-1]:
        raise TrackEditError(
            f"track {track} is in frames {int(frames[0])}..{int(frames[-1])}: it can be split "
            f"at a frame from {int(frames[0]) + 1} to {int(frames[-1])}, not at frame {frame}"
            if frames[-1] > frames[0]
            else f"track {track} is only in frame {int(frames[0])}: there is nothing to split"
        )
    top = int(max(data["track"].max(), data["parent"].max()))
    new = top + 1 if new_id is None else int(new_id)
    if new <= 0 or (new != track and np.any(data["track"] == new)):
        raise TrackEditError(f"track id {new} is taken: give a free id (or none) for the split")
    moved = rows & (data["t"] >= frame)
    data["track"][moved] = new
    data["parent"][moved] = 0
    data["parent"][data["parent"] == track] = new  # divisions happen after the end: the new part
    relabel = tuple((int(t), track, new) for t in np.unique(data["t"][moved]))
    message = f"track {track} split at frame {frame}: frames from {frame} on are track {new}"
    return TrackEdit(_sorted(data), relabel, track, new, (), message)


def apply_relabel(tracks, relabel, *, dtype=None):
    """Write ``relabel`` ((frame, old, new), ...) into ``tracks`` in place, frame by frame;
    returns ``[(frame, flat indices of the changed pixels)]`` (what undoes it)."""
    changed = []
    for t, old, new in relabel:
        plane = np.asarray(tracks[t])
        hit = np.flatnonzero(plane == old)
        if hit.size:
            plane = plane.copy()
            plane.flat[hit] = new
            tracks[t] = plane
        changed.append((int(t), hit))
    return changed


def _widened(tracks: np.ndarray, top: int) -> np.ndarray:
    if np.can_cast(np.min_scalar_type(top), tracks.dtype):
        return tracks.copy()
    return tracks.astype(np.promote_types(tracks.dtype, np.min_scalar_type(top)))


def merge_tracks(tracks, table, a: int, b: int):
    """``(tracks, table)`` with tracks ``a`` and ``b`` merged (see :func:`plan_merge`);
    the inputs are not changed."""
    edit = plan_merge(table, a, b)
    out = np.array(tracks, copy=True)
    apply_relabel(out, edit.relabel)
    return out, _like(table, edit.table)


def split_track(tracks, table, track: int, frame: int, new_id: int | None = None):
    """``(tracks, table)`` with ``track`` split at ``frame`` (see :func:`plan_split`);
    the new part's id is the largest id plus one. The inputs are not changed; the image
    gets a wider integer type when the new id needs one."""
    edit = plan_split(table, track, frame, new_id)
    out = _widened(np.asarray(tracks), edit.new)
    apply_relabel(out, edit.relabel)
    return out, _like(table, edit.table)


# -- hand-painted frames ------------------------------------------------------------------


@dataclass(frozen=True)
class Repaint:
    """The table after frames were painted by hand (:func:`plan_repaint`): ``table``,
    ``frames`` (those measured again), ``added``/``removed``/``changed`` ((frame, track)
    rows that appeared, went, or got another area or centroid), ``gone`` (tracks left
    in no frame: dropped), ``unlinked`` (their daughters, now without a parent) and
    ``message`` (what changed, in a sentence)."""

    table: dict
    frames: tuple[int, ...]
    added: tuple[tuple[int, int], ...]
    removed: tuple[tuple[int, int], ...]
    changed: tuple[tuple[int, int], ...]
    gone: tuple[int, ...]
    unlinked: tuple[int, ...]
    message: str


def _ids_text(ids) -> str:
    ids = [int(i) for i in ids]
    shown = ", ".join(map(str, ids[:6])) + (", ..." if len(ids) > 6 else "")
    return f"track {shown}" if len(ids) == 1 else f"tracks {shown}"


def _new_class(data: dict) -> int:
    """The class of a track painted with a new id: the table's only class, else 0
    (unknown)."""
    if "class" not in data:
        return 0
    classes = np.unique(data["class"][data["class"] > 0])
    return int(classes[0]) if classes.size == 1 else 0


def _painted_class(classes, t: int, plane: np.ndarray, track: int) -> int:
    """The class most of the pixels of ``track`` in frame ``t`` have in the class map
    ``classes[t]`` (0: no class map of that frame, or background under all of them;
    values that are no class id, negative or past int64, count as background). Not
    ``measure_frame``'s vote, which counts background as a class: a stroke that runs
    partly over background still takes the class it touches."""
    if classes is None or t not in classes:
        return 0
    under = np.asarray(classes[t])
    if under.shape != plane.shape:
        return 0
    values, counts = np.unique(under[plane == track], return_counts=True)
    keep = (values > 0) & (values <= np.iinfo(np.int64).max)  # background is no class
    return int(values[keep][counts[keep].argmax()]) if keep.any() else 0


def plan_repaint(table, planes: dict, classes: dict | None = None) -> Repaint:
    """The table after the frames ``planes`` ({frame t: its (Y, X) or (Z, Y, X) track
    ids now}) were painted by hand; the other frames' rows are kept as they are.

    Each frame's rows are measured again from its plane (``y``, ``x`` (and ``z``): the
    centroid in pixels, ``area``); a row keeps its ``parent``, ``class`` and ``object``
    (a track's own parent and class where the id is new to the frame; ``object`` 0: no
    object of the run, painted by hand). A track id new to the table starts with no
    parent and the class most of its pixels have in ``classes`` ({frame t: the run's
    class map of that frame, the plane's shape}, optional), else the table's class if it
    has one class, else 0 (unknown). A track left in no frame is dropped, and tracks that
    divided from it lose their parent."""
    from napari_sansa.core.tracks import measure_frame

    data = _columns(table)
    frames = tuple(sorted(int(t) for t in planes))
    axes = ("z", "y", "x") if "z" in data else ("y", "x")
    in_frames = np.isin(data["t"], frames)
    keep = {k: v[~in_frames] for k, v in data.items()}
    old = {k: v[in_frames] for k, v in data.items()}
    ids_all = np.unique(data["track"])
    parent_of = {int(k): int(data["parent"][data["track"] == k][0]) for k in ids_all}
    class_of = {}
    if "class" in data:
        for k in ids_all:
            class_of[int(k)] = int(np.bincount(data["class"][data["track"] == k]).argmax())
    fresh_class = _new_class(data)
    new_rows = {k: [] for k in data}
    added, removed, changed = [], [], []
    for t in frames:
        plane = np.asarray(planes[t])
        if plane.ndim != len(axes):
            raise TrackEditError(
                f"frame {t} has {plane.ndim} dimensions, the tracks {len(axes)}: paint "
                "on the track labels layer itself"
            )
        m = measure_frame(plane, None, t)
        here = old["t"] == t
        before = {int(k): i for k, i in zip(old["track"][here], np.flatnonzero(here), strict=True)}
        now = set()
        for j, track in enumerate(m.ids.tolist()):
            now.add(track)
            i = before.get(track)
            row = {"track": track, "t": t, "area": int(m.area[j]),
                   "parent": parent_of.get(track, 0)}  # fmt: skip
            for a, axis in enumerate(axes):
                row[axis] = float(m.centroid[j, a])
            if i is None:
                added.append((t, track))
                if "class" in data:
                    row["class"] = (
                        class_of[track]  # a known track keeps its class, 0 too
                        if track in class_of
                        else _painted_class(classes, t, plane, track) or fresh_class
                    )
            else:
                moved = any(abs(row[axis] - float(old[axis][i])) > 1e-9 for axis in axes)
                if moved or row["area"] != int(old["area"][i]):
                    changed.append((t, track))
            for k in data:
                if k not in row:
                    row[k] = old[k][i] if i is not None else np.zeros((), data[k].dtype)
                new_rows[k].append(row[k])
        removed += [(t, k) for k in sorted(before) if k not in now]
    after = {
        k: np.concatenate([keep[k], np.asarray(new_rows[k], dtype=data[k].dtype)]) for k in data
    }
    gone = sorted(set(ids_all.tolist()) - set(after["track"].tolist()))
    daughters = np.isin(after["parent"], gone) if gone else np.zeros(len(after["t"]), bool)
    unlinked = np.unique(after["track"][daughters]).tolist()
    after["parent"][daughters] = 0
    message = _repaint_message(frames, added, removed, changed, gone, unlinked, parent_of)
    return Repaint(
        _sorted(after), frames, tuple(added), tuple(removed), tuple(changed),
        tuple(int(g) for g in gone), tuple(int(u) for u in unlinked), message,
    )  # fmt: skip


def _repaint_message(frames, added, removed, changed, gone, unlinked, parent_of) -> str:
    parts = []
    new = sorted({k for _, k in added if k not in parent_of})
    if new:
        parts.append(f"new {_ids_text(new)}")
    more = sorted({k for _, k in added if k in parent_of})
    if more:
        parts.append(f"{_ids_text(more)} added")
    less = sorted({k for _, k in removed if k not in gone})
    if less:
        parts.append(f"{_ids_text(less)} erased")
    if changed:
        parts.append(f"{_ids_text(sorted({k for _, k in changed}))} reshaped")
    if gone:
        parts.append(f"{_ids_text(gone)} gone from every frame: dropped")
    if unlinked:
        parts.append(f"{_ids_text(unlinked)} no longer divide from it")
    what = "; ".join(parts) if parts else "no track changed"
    return f"{_frames_text(frames)} painted: {what}"


# -- undo and redo of a change to a table ---------------------------------------------------


@dataclass(frozen=True)
class TableChange:
    """What a change did to a track table: the rows of ``frames`` ``before`` and
    ``after`` it, and the tracks whose parent it changed (``parents_before``,
    ``parents_after``: {track: parent}) in the other frames. :func:`apply_change` makes
    it again or undoes it."""

    frames: tuple[int, ...]
    before: dict
    after: dict
    parents_before: dict
    parents_after: dict


def _parents(data: dict) -> dict[int, int]:
    ids, first = np.unique(data["track"], return_index=True)
    return dict(zip(ids.tolist(), data["parent"][first].tolist(), strict=True))


def table_change(before, after, frames) -> TableChange:
    """The :class:`TableChange` from table ``before`` to ``after``, which differ in the
    rows of ``frames`` and, elsewhere, only in parents."""
    b, a = _columns(before), _columns(after)
    frames = tuple(sorted({int(t) for t in frames}))
    in_b, in_a = np.isin(b["t"], frames), np.isin(a["t"], frames)
    pb, pa = _parents(b), _parents(a)
    both = [k for k in pb if k in pa and pb[k] != pa[k]]
    return TableChange(
        frames,
        {k: v[in_b] for k, v in b.items()},
        {k: v[in_a] for k, v in a.items()},
        {k: pb[k] for k in both},
        {k: pa[k] for k in both},
    )


def apply_change(table, change: TableChange, *, undo: bool = False) -> dict:
    """``table`` (the columns as a dict) with ``change`` made again, or undone
    (``undo=True``)."""
    data = _columns(table)
    rows = change.before if undo else change.after
    parents = change.parents_before if undo else change.parents_after
    keep = ~np.isin(data["t"], change.frames)
    out = {k: np.concatenate([v[keep], np.asarray(rows[k], v.dtype)]) for k, v in data.items()}
    for track, parent in parents.items():
        out["parent"][out["track"] == track] = parent
    return _sorted(out)
