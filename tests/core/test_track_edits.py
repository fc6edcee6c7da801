"""Track corrections (core/track_edits.py): merge two tracks, split one at a frame."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sansa.core.track_edits import (
    TrackEditError,
    apply_change,
    merge_tracks,
    plan_merge,
    plan_repaint,
    plan_split,
    split_track,
    table_change,
    track_frames,
)


def scene():
    """Six frames of 12x16: track 1 (frames 0-2) divides into 2 and 3 (frames 3-5);
    track 4 is frames 0-1 and track 5 frames 3-5 (the same cell, lost for frame 2)."""
    tracks = np.zeros((6, 12, 16), np.uint8)
    rows = []

    def put(track, t, r, c, parent=0):
        tracks[t, r : r + 2, c : c + 2] = track
        rows.append((track, t, r + 0.5, c + 0.5, 4, parent))

    for t in range(3):
        put(1, t, 1, 1 + t)
    for t in range(3, 6):
        put(2, t, 1, 4 + t, parent=1)
        put(3, t, 5, 4, parent=1)
    for t in range(2):
        put(4, t, 9, 1 + t)
    for t in range(3, 6):
        put(5, t, 9, 3 + t)
    cols = list(zip(*sorted(rows, key=lambda r: (r[1], r[0])), strict=True))  # t, track
    table = {
        name: np.asarray(col, dtype)
        for name, col, dtype in zip(
            ("track", "t", "y", "x", "area", "parent"),
            cols,
            (np.int64, np.int64, float, float, np.int64, np.int64),
            strict=True,
        )
    }
    return tracks, table


def rows_of(table, track):
    return {k: v[table["track"] == track] for k, v in table.items()}


def test_merging_gives_the_later_track_the_earlier_ones_id():
    tracks, table = scene()
    before_tracks, before_table = tracks.copy(), {k: v.copy() for k, v in table.items()}
    out, new = merge_tracks(tracks, table, 5, 4)  # either order: the earlier one stays
    np.testing.assert_array_equal(tracks, before_tracks)  # the inputs are left alone
    for k in table:
        np.testing.assert_array_equal(table[k], before_table[k])
    assert not (out == 5).any()
    np.testing.assert_array_equal(out == 4, (tracks == 4) | (tracks == 5))
    np.testing.assert_array_equal(out[tracks != 5], tracks[tracks != 5])
    assert 5 not in set(new["track"].tolist())
    np.testing.assert_array_equal(track_frames(new, 4), [0, 1, 3, 4, 5])  # a gap at frame 2
    four = rows_of(new, 4)
    np.testing.assert_array_equal(four["x"], [1.5, 2.5, 6.5, 7.5, 8.5])  # the rows go along
    assert len(new["track"]) == len(table["track"])
    assert set(new["parent"][new["track"] == 4].tolist()) == {0}


def test_merging_overlapping_tracks_is_refused_and_changes_nothing():
    tracks, table = scene()
    snapshot = {k: v.copy() for k, v in table.items()}
    with pytest.raises(TrackEditError, match=r"are both in frames 3, 4, 5"):
        merge_tracks(tracks, table, 2, 3)
    with pytest.raises(TrackEditError, match=r"tracks 1 and 4 cannot.*both in frames 0, 1"):
        plan_merge(table, 1, 4)
    for k in table:
        np.testing.assert_array_equal(table[k], snapshot[k])
    with pytest.raises(TrackEditError, match="chosen twice"):
        plan_merge(table, 3, 3)
    with pytest.raises(TrackEditError, match="there is no track 9"):
        plan_merge(table, 1, 9)


def test_merging_a_parent_with_a_daughter_unlinks_the_other_daughter():
    tracks, table = scene()
    edit = plan_merge(table, 1, 2)  # the division was wrong: 2 is 1 going on
    new = edit.table
    np.testing.assert_array_equal(track_frames(new, 1), range(6))
    assert set(new["parent"][new["track"] == 1].tolist()) == {0}
    # 3 began while 1 went on: no longer its daughter, and the message says so
    assert set(new["parent"][new["track"] == 3].tolist()) == {0}
    assert edit.unlinked == (3,)
    assert "track(s) 3 no longer divide from it" in edit.message
    assert edit.relabel == ((3, 2, 1), (4, 2, 1), (5, 2, 1))


def test_daughters_that_begin_before_the_merged_track_ends_lose_their_parent():
    tracks, table = scene()
    for d in (2, 3):  # 2 and 3 divide from 4 (frames 0-1) instead of 1
        table["parent"][table["track"] == d] = 4
    edit = plan_merge(table, 5, 4)
    new = edit.table
    # 4 is the earlier one and stays; it now goes on to frame 5, past 2 and 3's start
    assert edit.track == 4 and edit.new == 5
    assert set(new["parent"][np.isin(new["track"], [2, 3])].tolist()) == {0}
    assert edit.unlinked == (2, 3)


def test_daughters_of_the_later_track_follow_the_merge():
    # 7: frame 0; 1: frames 1-3, dividing into 2 and 3 (frames 4-5)
    spec = [(7, 0, 0)] + [(1, t, 0) for t in (1, 2, 3)]
    spec += [(d, t, 1) for d in (2, 3) for t in (4, 5)]
    table = {
        "track": np.array([s[0] for s in spec]),
        "t": np.array([s[1] for s in spec]),
        "parent": np.array([s[2] for s in spec]),
        "area": np.arange(len(spec)),
    }
    edit = plan_merge(table, 1, 7)
    new = edit.table
    assert edit.track == 7 and edit.new == 1
    np.testing.assert_array_equal(track_frames(new, 7), [0, 1, 2, 3])
    assert set(new["parent"][np.isin(new["track"], [2, 3])].tolist()) == {7}
    assert edit.unlinked == () and "no longer divide" not in edit.message
    assert sorted(new["area"].tolist()) == list(range(len(spec)))  # every row kept


def test_splitting_gives_the_later_part_a_new_id_and_the_daughters():
    tracks, table = scene()
    out, new = split_track(tracks, table, 1, 2)
    np.testing.assert_array_equal(out[:2], tracks[:2])
    assert not (out[2] == 1).any()
    np.testing.assert_array_equal(out[2] == 6, tracks[2] == 1)  # 6: the largest id + 1
    np.testing.assert_array_equal(track_frames(new, 1), [0, 1])
    np.testing.assert_array_equal(track_frames(new, 6), [2])
    assert set(new["parent"][np.isin(new["track"], [2, 3])].tolist()) == {6}
    assert set(new["parent"][new["track"] == 6].tolist()) == {0}
    assert not (tracks == 6).any()  # the input is left alone
    # split and merge undo each other (ids as before)
    back, again = merge_tracks(out, new, 1, 6)
    np.testing.assert_array_equal(back, tracks)
    for k in table:
        np.testing.assert_array_equal(again[k], table[k])


@pytest.mark.parametrize(
    ("track", "frame", "message"),
    [
        (1, 0, r"split at a frame from 1 to 2, not at frame 0"),
        (1, 3, r"from 1 to 2, not at frame 3"),
        (9, 1, "there is no track 9"),
    ],
)
def test_a_split_outside_the_track_is_refused(track, frame, message):
    tracks, table = scene()
    with pytest.raises(TrackEditError, match=message):
        split_track(tracks, table, track, frame)


def test_a_one_frame_track_cannot_be_split():
    tracks, table = scene()
    out, one = split_track(tracks, table, 1, 2)
    with pytest.raises(TrackEditError, match="only in frame 2: there is nothing to split"):
        split_track(out, one, 6, 2)


def test_a_split_widens_the_id_type_rather_than_wrap():
    tracks, table = scene()
    table["track"][table["track"] == 5] = 255
    tracks[tracks == 5] = 255
    out, new = split_track(tracks, table, 255, 4)
    assert out.dtype == np.uint16
    assert (out[4:] == 256).sum() == 8 and not (out == 0).all()
    assert set(new["track"].tolist()) == {1, 2, 3, 4, 255, 256}


def test_a_table_object_comes_back_as_its_own_kind():
    from napari_sansa.core.measures import ObjectTable

    class Table(ObjectTable):  # any table with as_dict and a constructor from columns
        def __init__(self, data):
            self._data = {k: np.asarray(v) for k, v in data.items()}
            self.columns = tuple(data)

    tracks, table = scene()
    out, new = merge_tracks(tracks, Table(table), 4, 5)
    assert isinstance(new, Table)
    np.testing.assert_array_equal(track_frames(new, 4), [0, 1, 3, 4, 5])


def test_corrections_of_track_objects_output_stay_a_track_table():
    """``ns.merge_tracks`` / ``ns.split_track`` on what ``ns.track_objects`` gives: the
    same as measuring the corrected map again with ``ns.track_table``."""
    import napari_sansa as ns

    tracks, table = scene()
    objects = np.where(tracks > 0, tracks + 10 * np.arange(6)[:, None, None], 0)  # new ids
    linked, tt = ns.track_objects(objects.astype(np.uint16), gap=1)
    split, st = ns.split_track(linked, tt, 1, 2)
    assert isinstance(st, ns.TrackTable)
    parents = dict(
        zip(st.summary()["track"].tolist(), st.summary()["parent"].tolist(), strict=True)
    )
    again = ns.track_table(split, parents)
    for k in ("track", "t", "y", "x", "area", "parent"):
        np.testing.assert_allclose(st[k], again[k])
    merged, mt = ns.merge_tracks(split, st, 1, int(split.max()))
    np.testing.assert_array_equal(merged, linked)


# -- frames painted by hand, and undoing changes ----------------------------------------------


def same_table(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_repainted_frame_is_measured_again_and_the_others_kept():
    tracks, table = scene()
    plane = tracks[4].copy()
    plane[plane == 3] = 0  # track 3 erased from frame 4
    plane[7:10, 12:15] = 7  # a new track, 3x3
    plane[1, 8] = 0  # track 2 (at rows 1-2, columns 8-9) loses a pixel
    edit = plan_repaint(table, {4: plane})
    new = edit.table
    assert edit.frames == (4,)
    assert edit.added == ((4, 7),) and edit.removed == ((4, 3),) and edit.changed == ((4, 2),)
    assert edit.message == "frame 4 painted: new track 7; track 3 erased; track 2 reshaped"
    row = np.flatnonzero((new["track"] == 7) & (new["t"] == 4))[0]
    assert (new["area"][row], new["y"][row], new["x"][row], new["parent"][row]) == (9, 8, 13, 0)
    row = np.flatnonzero((new["track"] == 2) & (new["t"] == 4))[0]
    assert new["area"][row] == 3 and new["parent"][row] == 1  # the parent stays
    np.testing.assert_allclose([new["y"][row], new["x"][row]], [(1 + 2 + 2) / 3, (9 + 8 + 9) / 3])
    others = new["t"] != 4
    for k in table:
        np.testing.assert_array_equal(new[k][others], table[k][table["t"] != 4])
    assert np.all(np.diff(new["t"]) >= 0)  # sorted by frame, then track


def test_a_track_erased_from_every_frame_is_dropped_and_its_daughters_unlinked():
    tracks, table = scene()
    planes = {t: np.where(tracks[t] == 1, 0, tracks[t]) for t in range(3)}
    edit = plan_repaint(table, planes)
    assert edit.gone == (1,) and edit.unlinked == (2, 3)
    assert 1 not in edit.table["track"] and not edit.table["parent"].any()
    assert "track 1 gone from every frame: dropped; tracks 2, 3 no longer divide from it" in (
        edit.message
    )


def test_a_painted_id_takes_its_tracks_class_or_the_tables_only_class():
    tracks, table = scene()
    table["class"] = np.where(table["track"] == 4, 2, 1)
    plane = tracks[2].copy()
    plane[9:11, 3:5] = 4  # track 4 (class 2) painted on frame 2, where it was not
    plane[5:7, 10:12] = 8  # a new id: classes 1 and 2 in the table, so 0 (unknown)
    new = plan_repaint(table, {2: plane}).table
    at2 = new["t"] == 2
    cls = dict(zip(new["track"][at2].tolist(), new["class"][at2].tolist(), strict=True))
    assert cls == {1: 1, 4: 2, 8: 0}
    table["class"][:] = 3  # one class: a new id takes it
    new = plan_repaint(table, {2: plane}).table
    assert set(new["class"][new["t"] == 2].tolist()) == {3}


def test_a_new_id_takes_the_class_under_it_in_the_runs_class_map():
    """Several classes: a new id painted by hand takes the class most of its pixels have
    in the run's class map of that frame; painted on background, or without a class map
    of that frame's shape, it stays unknown (0); known tracks keep their own class."""
    tracks, table = scene()
    table["class"] = np.where(table["track"] == 4, 2, 1)
    plane = tracks[2].copy()
    plane[5:7, 10:12] = 8  # a new id over class 2 (3 pixels) and class 1 (1 pixel)
    plane[0:2, 0:2] = 9  # a new id on background
    class_map = np.zeros_like(plane)
    class_map[5:7, 10:12] = 2
    class_map[6, 11] = 1
    class_map[tracks[2] > 0] = 5  # (under known tracks: not used for them)

    def classes_at_2(classes):
        new = plan_repaint(table, {2: plane}, classes).table
        at2 = new["t"] == 2
        return dict(zip(new["track"][at2].tolist(), new["class"][at2].tolist(), strict=True))

    got = classes_at_2({2: class_map})
    assert got[8] == 2 and got[9] == 0 and all(got[k] == 1 for k in got if k not in (8, 9))
    assert classes_at_2({1: class_map})[8] == 0  # no class map of frame 2
    assert classes_at_2({2: class_map[:, :-1]})[8] == 0  # another shape
    # any label values a person may have painted on the class map: no error, no huge count
    for dtype, value in ((np.int32, -3), (np.uint64, 2**63 + 5), (np.int64, 2**40)):
        odd = class_map.astype(dtype)
        odd[5:7, 10:12] = value
        assert classes_at_2({2: odd})[8] == (value if 0 < value < 2**63 else 0)
    # a known track of class 0 (unknown) painted onto another frame keeps 0 there
    table["class"] = np.where(table["track"] == 4, 0, 1)
    plane = tracks[2].copy()
    plane[5:7, 10:12] = 4
    assert classes_at_2({2: class_map})[4] == 0
    assert classes_at_2(None)[4] == 0


def test_a_plane_of_the_wrong_dimensions_is_refused():
    tracks, table = scene()
    with pytest.raises(TrackEditError, match="frame 1 has 3 dimensions, the tracks 2"):
        plan_repaint(table, {1: tracks[:2]})


@pytest.mark.parametrize("make", ["merge", "split", "repaint"])
def test_a_table_change_is_undone_and_made_again(make):
    tracks, table = scene()
    if make == "merge":
        edit = plan_merge(table, 5, 4)
        frames = [t for t, _, _ in edit.relabel]
    elif make == "split":
        edit = plan_split(table, 1, 1)
        frames = [t for t, _, _ in edit.relabel]
    else:
        edit = plan_repaint(table, {t: np.where(tracks[t] == 1, 0, tracks[t]) for t in range(3)})
        frames = edit.frames
    change = table_change(table, edit.table, frames)
    assert set(change.frames) == set(frames)
    same_table(apply_change(edit.table, change, undo=True), table)
    same_table(apply_change(table, change), edit.table)
