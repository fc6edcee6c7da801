"""Tracks in napari without Qt (napari/tracks_output.py, track_session.py): the track
layers, corrections and their undo, selection, saving, and the T axis a run needs.

A bare ``ViewerModel`` and a synthetic time-lapse of moving disks with known tracks:
the linking is the core's, so these tests need no model.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.layers import Labels, Tracks

from napari_sansa.core.tracks import track_objects
from napari_sansa.napari.geometry import is_prompt_layer
from napari_sansa.napari.tracks_output import (
    TrackSettings,
    TracksOutput,
    link_tracks,
    time_axis,
    track_labels_name,
    tracks_name,
)

T, H, W = 6, 40, 60


def disk(shape, r, c, radius):
    rr, cc = np.indices(shape)
    return (rr - r) ** 2 + (cc - c) ** 2 <= radius**2


def moving_disks():
    """``(objects, class_map)``: disk A (class 1) moves right in every frame; disk B
    (class 2) moves down and is gone in frame 3 (a gap); object ids differ per frame."""
    objects = np.zeros((T, H, W), np.uint16)
    for t in range(T):
        a = disk((H, W), 10, 8 + 4 * t, 5)
        objects[t][a] = 1 + t  # ids unrelated between frames
        if t != 3:
            objects[t][disk((H, W), 8 + 3 * t, 45, 5)] = 20 - t
    class_map = np.where(objects >= 10, 2, np.where(objects > 0, 1, 0)).astype(np.uint8)
    return objects, class_map


def viewer_with_tracks():
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    objects, class_map = moving_disks()
    image = viewer.add_image(np.random.default_rng(0).random((T, H, W)), name="cells")
    session = SansaSession(viewer)
    messages = []
    session.status.connect(messages.append)
    session.tracks = TracksOutput(viewer, image, TrackSettings())
    session._on_linked(link_tracks(objects, class_map, TrackSettings()))  # the linking's end
    return viewer, session, messages


def ids_at(layer, t, r, c):
    return int(layer.data[t, r, c])


def test_link_tracks_gives_the_cores_tracks_with_classes():
    objects, class_map = moving_disks()
    tracks, table = link_tracks(objects, class_map, TrackSettings(gap=1))
    want, want_table = track_objects(objects, classes=class_map, gap=1)
    np.testing.assert_array_equal(tracks, want)
    for k in want_table.columns:
        np.testing.assert_array_equal(table[k], want_table[k])
    # two tracks, A in every frame, B bridging its missing frame 3
    assert sorted(set(table["track"].tolist())) == [1, 2]
    assert set(table["class"][table["track"] == 1].tolist()) == {1}
    assert set(table["class"][table["track"] == 2].tolist()) == {2}
    # the objects' classes as {object id: class} (the objects layer's features) alike
    ids = np.unique(objects[objects > 0])
    by_id = {int(i): int(class_map[objects == i][0]) for i in ids}
    tracks2, table2 = link_tracks(objects, by_id, TrackSettings(gap=1))
    np.testing.assert_array_equal(tracks2, tracks)
    np.testing.assert_array_equal(table2["class"], table["class"])


def test_the_track_layers_hold_the_tracks():
    viewer, session, _ = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    assert isinstance(labels, Labels) and isinstance(lines, Tracks)
    assert not is_prompt_layer(labels)  # an output: never the next run's prompts
    table = session.tracks.table
    # the Tracks layer: one point per (track, frame) at its centroid, features too
    assert lines.data.shape == (len(table["track"]), 4)
    row = np.flatnonzero((table["track"] == 1) & (table["t"] == 2))[0]
    point = lines.data[(lines.data[:, 0] == 1) & (lines.data[:, 1] == 2)][0]
    np.testing.assert_allclose(point[2:], [table["y"][row], table["x"][row]])
    np.testing.assert_allclose(point[2:], [10, 16], atol=0.01)
    assert {"area", "class"} <= set(lines.features.columns)  # napari adds track_id
    # the labels layer: the ids under each disk, features one row per track
    assert ids_at(labels, 4, 10, 24) == 1 and ids_at(labels, 4, 20, 45) == 2
    features = labels.features
    assert features["index"].tolist() == [1, 2]
    assert features["start"].tolist() == [0, 0] and features["end"].tolist() == [5, 5]
    assert features["frames"].tolist() == [6, 5]  # B has a gap
    assert features["class"].tolist() == [1, 2]
    assert session.tracks.counts()[3] == {"tracks": 1, "new": 0, "divisions": 0}
    assert session.tracks.counts()[0] == {"tracks": 2, "new": 2, "divisions": 0}


def test_split_merge_and_undo_keep_layers_and_table_together():
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    before = np.array(labels.data)
    assert session.split_track(1, 3)
    assert "track 1 split at frame 3: frames from 3 on are track 3" in messages[-1]
    assert ids_at(labels, 2, 10, 16) == 1 and ids_at(labels, 3, 10, 20) == 3
    later = (np.arange(T) >= 3)[:, None, None]
    np.testing.assert_array_equal(labels.data == 3, (before == 1) & later)
    assert set(lines.data[lines.data[:, 0] == 3, 1].tolist()) == {3, 4, 5}
    assert labels.features["index"].tolist() == [1, 2, 3]
    # the split at the frame shown (the slider on frame 4)
    viewer.dims.set_point(0, 4)
    assert session.split_track(2)
    assert ids_at(labels, 4, 20, 45) == 4 and ids_at(labels, 2, 14, 45) == 2
    # merging tracks both in a frame: refused, nothing changes
    snapshot = np.array(labels.data), {k: v.copy() for k, v in session.tracks.table.items()}
    assert not session.merge_tracks(1, 2)
    assert "tracks 1 and 2 cannot be merged: split one of them first" in messages[-1]
    assert "they are both in frames 0, 1, 2" in messages[-1]
    np.testing.assert_array_equal(labels.data, snapshot[0])
    for k, v in snapshot[1].items():
        np.testing.assert_array_equal(session.tracks.table[k], v)
    # merge back, in either order: the earlier id stays
    assert session.merge_tracks(4, 2)
    assert session.merge_tracks(3, 1)
    np.testing.assert_array_equal(labels.data, before)
    assert lines.data.shape[0] == len(session.tracks.table["track"])
    assert set(lines.data[:, 0].tolist()) == {1, 2}
    # undo: back through the four corrections, layers and table alike
    assert session.undo_tracks() and session.undo_tracks()
    assert ids_at(labels, 4, 20, 45) == 4 and ids_at(labels, 3, 10, 20) == 3
    assert set(lines.data[:, 0].tolist()) == {1, 2, 3, 4}
    assert session.undo_tracks() and session.undo_tracks()
    np.testing.assert_array_equal(labels.data, before)
    assert labels.features["index"].tolist() == [1, 2]
    assert not session.undo_tracks()
    assert "no track correction to undo" in messages[-1]


def test_ctrl_z_on_the_track_labels_undoes_the_last_correction():
    viewer, session, _ = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    before = np.array(labels.data)
    session.split_track(1, 2)
    session.tracks.undo_or_layer()  # what Ctrl+Z on the layer calls
    np.testing.assert_array_equal(labels.data, before)
    labels.paint((1, 30, 5), 9)  # a brush stroke: no correction left, napari's own undo
    assert ids_at(labels, 1, 30, 5) == 9
    session.tracks.undo_or_layer()
    np.testing.assert_array_equal(labels.data, before)


def test_selecting_a_track_by_id_or_by_clicking_a_layer():
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    picked = []
    session.track_selected.connect(picked.append)
    text = session.select_track(2)
    assert text == "track 2: frames 0-5 (5, with gaps), no parent, class 2"
    assert messages[-1] == text and picked == [2] and labels.selected_label == 2
    out = session.tracks
    assert out.track_at(labels, (4, 10, 24)) == 1
    assert out.track_at(labels, (4, 35, 5)) is None  # background
    assert out.track_at(lines, (4, 21, 44)) == 2  # the nearest point in the frame
    assert out.track_at(lines, (4, 35, 5)) is None


def test_saving_tracks_writes_labels_csv_and_the_ctc_files(tmp_path):
    import csv

    viewer, session, _ = viewer_with_tracks()
    session.split_track(1, 3)
    paths = session.save_tracks(tmp_path)
    labels = viewer.layers[track_labels_name("cells")]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells tracks.tif"), labels.data)
    with open(tmp_path / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(session.tracks.table["track"])
    assert {int(r["track"]) for r in rows} == {1, 2, 3}
    ctc = (tmp_path / "ctc" / "res_track.txt").read_text().split("\n")
    lines = {tuple(map(int, line.split())) for line in ctc if line}
    # B (track 2) bridges frame 3: two CTC tracks, the second the first's daughter
    assert (1, 0, 2, 0) in lines and (3, 3, 5, 0) in lines and (2, 0, 2, 0) in lines
    assert len(lines) == 4 and any(line[3] == 2 for line in lines)
    assert str(tmp_path / "ctc" / "mask005.tif") in paths
    assert session.save_tracks(None) == []


def test_corrections_after_the_track_labels_were_removed(notifications):
    viewer, session, messages = viewer_with_tracks()
    viewer.layers.remove(track_labels_name("cells"))
    assert not session.merge_tracks(1, 2)
    assert "'cells [sansa track labels]' was removed: run again" in messages[-1]
    # the Tracks layer removed (the labels kept): corrections go on without it
    viewer2, session2, _ = viewer_with_tracks()
    viewer2.layers.remove(tracks_name("cells"))
    assert session2.split_track(1, 3)
    assert tracks_name("cells") not in [layer.name for layer in viewer2.layers]


def test_no_tracks_yet_says_how_to_get_them():
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    session = SansaSession(ViewerModel())
    messages = []
    session.status.connect(messages.append)
    assert not session.merge_tracks(1, 2)
    assert "there are no tracks yet: tick 'tracks'" in messages[-1]


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [
        ((T, H, W), None, (0, None)),
        ((T, H, W), ("t", "y", "x"), (0, None)),
        ((H, W), None, "is a single image, not a time-lapse"),
        ((T, H, W), ("z", "y", "x"), "has no T axis (its frame axes: z)"),
        ((T, 3, H, W), None, "has 2 frame axes and does not name them"),
        ((T, 3, H, W), ("t", "z", "y", "x"), (0, None)),
        ((3, T, H, W), ("z", "t", "y", "x"), "has its T axis after its Z axis"),
        ((T, 2, H, W), ("t", "c", "y", "x"), "has other axes besides T and Z (channels)"),
        ((T, 3, 2, H, W), ("t", "z", "q", "y", "x"), "other axes besides T and Z (q)"),
    ],
)
def test_the_t_axis_of_an_image(shape, axes, expected):
    from napari.layers import Image

    kwargs = {} if axes is None else {"axis_labels": axes}
    image = Image(np.zeros(shape, np.uint8), name="img", **kwargs)
    axis, problem = time_axis(image)
    if isinstance(expected, tuple):
        assert (axis, problem) == expected
    else:
        assert axis is None and expected in problem, problem


def test_a_run_with_tracks_on_an_image_without_t_is_refused():
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession
    from napari_sansa.napari.worker import RunSettings

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((T, H, W), np.uint8), name="zs", axis_labels="zyx")
    paint = viewer.add_labels(np.zeros((T, H, W), np.uint8), name="paint")
    paint.data[0, 5:15, 5:15] = 1
    session = SansaSession(viewer, create_worker=lambda *a, **k: pytest.fail("no run"))
    messages = []
    session.status.connect(messages.append)
    settings = RunSettings.make(tracks=True)
    assert settings.segment.instances is not None  # tracks imply objects
    assert session.run(image, [paint], None, settings) is None
    assert "'zs' has no T axis (its frame axes: z)" in messages[-1]
    assert [layer.name for layer in viewer.layers] == ["zs", "paint"]


def test_ctrl_z_after_a_second_linking_undoes_the_new_tracks_corrections():
    """A second run writes into the same track labels layer: Ctrl+Z there undoes the
    corrections of the new tracks (it kept calling the first run's, which had none)."""
    from napari.utils.key_bindings import KeyBinding

    viewer, session, _ = viewer_with_tracks()
    objects, class_map = moving_disks()
    again = TracksOutput(viewer, session.tracks.image, TrackSettings())
    again.show(*link_tracks(objects, class_map, TrackSettings()))
    session.tracks = again
    labels = viewer.layers[track_labels_name("cells")]
    assert again.labels is labels  # the same layer, updated in place
    before = np.array(labels.data)
    assert session.split_track(1, 2)
    ctrl_z = labels.keymap[KeyBinding.from_str("Control-Z")]
    ctrl_z(labels)
    np.testing.assert_array_equal(labels.data, before)
    assert session.tracks.table["track"].max() == 2


def test_tracks_of_3d_objects_in_a_tz_stack():
    """A (T, Z, Y, X) stack: 3D objects linked with their voxel size; the Tracks layer
    has z; corrections and clicks work on volumes."""
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    objects2d, class_map2d = moving_disks()
    objects = np.stack([objects2d] * 3, axis=1)  # every object 3 planes deep
    objects[:, 0] = 0  # not on the first plane
    class_map = np.stack([class_map2d] * 3, axis=1)
    class_map[:, 0] = 0
    viewer = ViewerModel()
    image = viewer.add_image(
        np.zeros(objects.shape, np.uint8), name="tz", axis_labels=("t", "z", "y", "x")
    )
    assert time_axis(image) == (0, None)
    session = SansaSession(viewer)
    session.tracks = TracksOutput(viewer, image, TrackSettings())
    tracks, table = link_tracks(objects, class_map, TrackSettings(), spacing=(2.0, 1.0, 1.0))
    want, _ = track_objects(objects, classes=class_map, spacing=(2.0, 1.0, 1.0))
    np.testing.assert_array_equal(tracks, want)
    session.tracks.show(tracks, table)
    labels = viewer.layers[track_labels_name("tz")]
    lines = viewer.layers[tracks_name("tz")]
    assert labels.data.shape == objects.shape and lines.data.shape[1] == 5  # id, t, z, y, x
    np.testing.assert_allclose(lines.data[(lines.data[:, 0] == 1) & (lines.data[:, 1] == 2)][0],
                               [1, 2, 1.5, 10, 16], atol=0.01)  # fmt: skip
    assert session.tracks.track_at(labels, (2, 1, 10, 16)) == 1
    assert session.tracks.track_at(labels, (2, 0, 10, 16)) is None  # not on plane 0
    assert session.tracks.track_at(lines, (2, 1.5, 10, 16)) == 1
    before = np.array(labels.data)
    assert session.split_track(1, 3)
    np.testing.assert_array_equal(labels.data[3:] == 3, before[3:] == 1)
    assert session.undo_tracks()
    np.testing.assert_array_equal(labels.data, before)


def test_tracks_of_a_tz_stack_need_3d_objects():
    from napari.components import ViewerModel

    from napari_sansa.core.objects import ObjectOptions
    from napari_sansa.napari.session import SansaSession
    from napari_sansa.napari.worker import RunSettings

    viewer = ViewerModel()
    image = viewer.add_image(
        np.zeros((T, 3, H, W), np.uint8), name="tz", axis_labels=("t", "z", "y", "x")
    )
    paint = viewer.add_labels(np.zeros((T, 3, H, W), np.uint8), name="paint")
    paint.data[0, 1, 5:15, 5:15] = 1
    session = SansaSession(viewer, create_worker=lambda *a, **k: pytest.fail("no run"))
    messages = []
    session.status.connect(messages.append)
    settings = RunSettings.make(tracks=True, instances=ObjectOptions(dims="2d"))
    assert session.run(image, [paint], None, settings) is None
    assert "link its 3D objects: untick 'objects per plane'" in messages[-1]
    assert [layer.name for layer in viewer.layers] == ["tz", "paint"]


def test_saving_tracks_after_a_run_without_tracks_says_they_are_older(tmp_path):
    from napari_sansa.napari.session import RunSettings

    viewer, session, messages = viewer_with_tracks()
    session.images = (viewer.layers["cells"],)
    session._runs_without_tracks(RunSettings())  # what a run without 'tracks' does first
    assert session.save_tracks(tmp_path)  # still saved: the person's corrections are kept
    assert "linked before the last run on 'cells', which made no tracks" in messages[-1]
    tracks, table = link_tracks(*moving_disks(), TrackSettings())
    session.tracks.show(tracks, table)  # a run with tracks: current again
    session.save_tracks(tmp_path / "again")
    assert "linked before" not in messages[-1]


def test_a_run_whose_objects_layer_was_removed_makes_no_tracks_and_says_so():
    """The objects layer deleted by the person before the run ended: no linking of an
    empty layer made again, and the run's last message says why there are no tracks."""
    from napari.components import ViewerModel

    from napari_sansa.core.objects import ObjectOptions
    from napari_sansa.napari.objects_output import ObjectsOutput
    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((T, H, W), np.uint8), name="cells")
    session = SansaSession(viewer, create_worker=lambda *a, **k: pytest.fail("no linking"))
    messages = []
    session.status.connect(messages.append)
    # the state a run with tracks ends in, its objects layer gone
    session.images = (image,)
    session.objects = ObjectsOutput(viewer, ObjectOptions(), [image])
    session._track_settings = TrackSettings()
    session.done = T
    session._on_finished()
    assert (
        messages[-1]
        == f"done: {T} frames; no tracks: the layer 'cells [sansa objects]' was removed"
    )
    assert [layer.name for layer in viewer.layers] == ["cells"]


def test_the_run_frames_by_time_point_are_the_layers_planes():
    """'follow with SAM2' reads frames[t][z] of a (T, Z, Y, X) stack from the run's
    flat frame stack (T first): the plane the objects of (t, z) were made from."""
    from napari.components import ViewerModel

    from napari_sansa.napari.geometry import FrameStack, image_geometry
    from napari_sansa.napari.tracks_output import time_lapse_frames

    viewer = ViewerModel()
    data = np.random.default_rng(1).random((3, 4, 10, 12)).astype(np.float32)
    image = viewer.add_image(data, name="tz", axis_labels=("t", "z", "y", "x"))
    stack = FrameStack(image.data, image_geometry(image), name="tz")
    frames = time_lapse_frames(stack, 3, 4)
    assert len(frames) == 3 and len(frames[1]) == 4
    for t in range(3):
        for z in range(4):
            np.testing.assert_array_equal(frames[t][z], data[t, z])
    flat = time_lapse_frames(
        FrameStack(data[:, 0], image_geometry(viewer.add_image(data[:, 0]))), 3, None
    )
    np.testing.assert_array_equal(flat[2], data[2, 0])


def test_following_with_sam2_on_tiles_is_refused_before_the_run():
    """'follow with SAM2' carries objects on whole frames: a run whose frames are cut
    into tiles is refused and says what to change; frames smaller than a tile are not
    cut, so they may follow."""
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession
    from napari_sansa.napari.worker import RunSettings

    viewer = ViewerModel()
    big = viewer.add_image(np.zeros((3, 200, 220), np.uint8), name="big")
    small = viewer.add_image(np.zeros((3, 50, 60), np.uint8), name="small")
    session = SansaSession(viewer)
    follow = TrackSettings(follow=True)
    tiled = RunSettings.make(tile_size=64, tracks=follow)
    problem = session._check_tracks([big], tiled)
    assert "'follow with SAM2'" in problem and "tile size to 0" in problem
    assert session._check_tracks([small], tiled) is None
    assert session._check_tracks([big], RunSettings.make(tile_size=64, tracks=True)) is None
    assert session._check_tracks([big], RunSettings.make(tracks=follow)) is None


# -- painting by hand on the track labels -----------------------------------------------------


def rows_of(table, track, t):
    return np.flatnonzero((table["track"] == track) & (table["t"] == t))


def points_of(lines, track):
    return lines.data[lines.data[:, 0] == track]


def test_painting_a_new_id_adds_its_track_at_that_frame():
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    changes = []
    session.tracks_changed.connect(lambda: changes.append(1))
    labels.brush_size = 5
    labels.paint((2, 30, 10), 9)  # napari's brush, on frame 2, away from the disks
    painted = np.argwhere(labels.data[2] == 9)
    assert len(painted) > 0
    table = session.tracks.table
    [row] = rows_of(table, 9, 2)
    assert table["area"][row] == len(painted)
    np.testing.assert_allclose([table["y"][row], table["x"][row]], painted.mean(axis=0))
    assert table["parent"][row] == 0 and table["object"][row] == 0  # painted by hand
    assert set(table["track"][table["t"] == 2].tolist()) == {1, 2, 9}
    # the Tracks layer, the features, the counts and the status follow
    np.testing.assert_allclose(points_of(lines, 9)[:, 1:], [[2, *painted.mean(axis=0)]])
    assert labels.features["index"].tolist() == [1, 2, 9]
    assert session.tracks.counts()[2]["tracks"] == 3
    assert session.tracks.counts()[2]["new"] == 1
    assert messages[-1] == "frame 2 painted: new track 9" and changes


def test_a_new_id_painted_takes_the_class_under_it_in_the_runs_labels():
    """Two classes: a new id painted by hand takes the class the run's labels layer
    ("<image> [sansa]") has under most of it; without that layer it stays 0, unknown."""
    from napari_sansa.napari.geometry import META_KEY

    viewer, session, _ = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    labels.brush_size = 5
    labels.paint((2, 30, 10), 9)  # no class map: two classes in the table, so unknown
    [row] = rows_of(session.tracks.table, 9, 2)
    assert session.tracks.table["class"][row] == 0
    _, class_map = moving_disks()
    class_map[2, 25:36, 5:16] = 2  # the run labelled class 2 where the next stroke goes
    viewer.add_labels(class_map, name="cells [sansa]", metadata={META_KEY: "output"})
    labels.paint((2, 30, 40), 7)
    labels.paint((2, 30, 10), 9)  # over its own track 9: known, keeps class 0
    labels.paint((1, 30, 10), 6)  # frame 1 has no class 2 there: background, unknown
    table = session.tracks.table
    assert table["class"][rows_of(table, 9, 2)].tolist() == [0]
    assert table["class"][rows_of(table, 6, 1)].tolist() == [0]
    labels.paint((2, 30, 12), 11)
    table = session.tracks.table
    assert table["class"][rows_of(table, 11, 2)].tolist() == [2]
    assert table["class"][rows_of(table, 7, 2)].tolist() == [0]  # painted on background


def test_painting_a_track_onto_another_frame_extends_it():
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    assert not rows_of(session.tracks.table, 2, 3).size  # B is missed in frame 3
    where = np.nonzero(disk((H, W), 17, 45, 5))
    labels.data_setitem((np.full(len(where[0]), 3), *where), 2)
    table = session.tracks.table
    [row] = rows_of(table, 2, 3)
    assert table["area"][row] == len(where[0]) and table["class"][row] == 2
    np.testing.assert_allclose([table["y"][row], table["x"][row]], [17, 45])
    assert labels.features.set_index("index").loc[2, "frames"] == 6  # no gap any more
    assert points_of(lines, 2)[:, 1].tolist() == [0, 1, 2, 3, 4, 5]
    assert messages[-1] == "frame 3 painted: track 2 added"


def test_a_stroke_cutting_an_object_changes_its_area_and_centroid():
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    before = {k: v.copy() for k, v in session.tracks.table.items()}
    [row] = rows_of(before, 1, 2)
    # erase the left half of track 1 in frame 2 (disk A at (10, 16))
    cut = np.nonzero((labels.data[2] == 1) & (np.indices((H, W))[1] < 16))
    labels.data_setitem((np.full(len(cut[0]), 2), *cut), 0)
    table = session.tracks.table
    [new] = rows_of(table, 1, 2)
    left = np.argwhere(labels.data[2] == 1)
    assert table["area"][new] == len(left) == before["area"][row] - len(cut[0])
    np.testing.assert_allclose([table["y"][new], table["x"][new]], left.mean(axis=0))
    assert table["x"][new] > before["x"][row] + 1  # the centroid moved right
    np.testing.assert_allclose(points_of(lines, 1)[2, 2:], left.mean(axis=0))
    others = table["t"] != 2  # the other frames' rows as they were
    for k in table:
        np.testing.assert_array_equal(table[k][others], before[k][before["t"] != 2])
    assert messages[-1] == "frame 2 painted: track 1 reshaped"


def test_only_the_frames_painted_are_measured_again(monkeypatch):
    import napari_sansa.core.tracks as core_tracks

    viewer, session, _ = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    measured = []
    original = core_tracks.measure_frame

    def counting(frame, cls_frame, index):
        measured.append(index)
        return original(frame, cls_frame, index)

    monkeypatch.setattr(core_tracks, "measure_frame", counting)
    labels.brush_size = 3
    labels.paint((4, 30, 10), 1)
    assert measured == [4]
    labels.data_setitem((np.array([1, 5]), np.array([30, 30]), np.array([30, 30])), 7)
    assert measured == [4, 1, 5]
    assert rows_of(session.tracks.table, 7, 1).size and rows_of(session.tracks.table, 7, 5).size


def dividing_disks():
    """Track 1 divides into 3 and 4 at frame 3; track 2 goes on beside it."""
    objects = np.zeros((T, H, W), np.uint16)
    for t in range(T):
        if t < 3:
            objects[t][disk((H, W), 20, 20, 7)] = 1 + t
        else:
            objects[t][disk((H, W), 13, 20, 5)] = 10 + t
            objects[t][disk((H, W), 27, 20, 5)] = 20 + t
        objects[t][disk((H, W), 20, 48, 5)] = 30 + t
    return objects, (objects > 0).astype(np.uint8)


def test_erasing_a_track_from_every_frame_drops_it_and_its_daughters_lose_their_parent():
    viewer, session, messages = viewer_with_tracks()
    session.tracks.show(*link_tracks(*dividing_disks(), TrackSettings()))
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    before = {k: v.copy() for k, v in session.tracks.table.items()}
    pixels = np.array(labels.data)
    parents = dict(zip(labels.features["index"], labels.features["parent"], strict=True))
    assert parents == {1: 0, 2: 0, 3: 1, 4: 1} and lines.graph == {3: [1], 4: [1]}
    # erased from frame 1 only: its row there goes, the division stays
    labels.fill((1, 20, 20), 0)
    assert not rows_of(session.tracks.table, 1, 1).size
    assert session.tracks.counts()[1]["tracks"] == 1
    assert messages[-1] == "frame 1 painted: track 1 erased"
    assert lines.graph == {3: [1], 4: [1]}
    # erased from its other frames: dropped, and its daughters have no parent
    where = np.nonzero(labels.data == 1)
    labels.data_setitem(where, 0)
    table = session.tracks.table
    assert 1 not in table["track"] and not table["parent"].any()
    assert labels.features["index"].tolist() == [2, 3, 4]
    assert lines.graph == {}
    assert "track 1 gone from every frame: dropped" in messages[-1]
    assert "tracks 3, 4 no longer divide from it" in messages[-1]
    # undo twice: the pixels, the rows and the division back
    assert session.undo_tracks() and session.undo_tracks()
    np.testing.assert_array_equal(labels.data, pixels)
    for k, v in before.items():
        np.testing.assert_array_equal(session.tracks.table[k], v)
    assert lines.graph == {3: [1], 4: [1]}
    assert messages[-1].startswith("undone: frame 1 painted")


def test_undo_and_redo_of_strokes_and_corrections_are_one_history():
    """Ctrl+Z (napari's undo of the layer) and the Tracks page's Undo undo the last of
    the strokes and corrections, in order, the table with the pixels; Ctrl+Shift+Z redoes."""
    from napari.utils.key_bindings import KeyBinding

    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    out = session.tracks

    def state():
        return np.array(labels.data), {k: v.copy() for k, v in out.table.items()}

    def same(a, b):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1].keys() == b[1].keys()
        for k in a[1]:
            np.testing.assert_array_equal(a[1][k], b[1][k])

    start = state()
    assert session.split_track(1, 3)
    split = state()
    labels.brush_size = 5
    labels.paint((4, 30, 10), 3)  # track 3 (the split's new part) gets a second object
    painted = state()
    assert (
        out.table["area"][rows_of(out.table, 3, 4)[0]]
        > split[1]["area"][rows_of(split[1], 3, 4)[0]]
    )
    ctrl_z = labels.keymap[KeyBinding.from_str("Control-Z")]
    ctrl_z(labels)  # the stroke first (it was the last), not the split
    same(state(), split)
    assert messages[-1] == "undone: frame 4 painted: track 3 reshaped"
    assert session.undo_tracks()  # then the split
    same(state(), start)
    assert set(lines.data[:, 0].tolist()) == {1, 2}
    labels.redo()  # napari's redo: the split again, then the stroke
    same(state(), split)
    labels.keymap[KeyBinding.from_str("Control-Shift-Z")](labels)
    same(state(), painted)
    assert messages[-1] == "redone: frame 4 painted: track 3 reshaped"
    labels.undo()  # napari's own undo of the layer, as from its console
    same(state(), split)
    assert out.can_undo
    # a new stroke ends what could be redone (as napari's history does)
    labels.paint((0, 30, 30), 8)
    assert session.redo_tracks() is False
    assert "nothing to redo" in messages[-1]


def test_undo_after_napari_reset_the_layer_s_history_leaves_the_table_with_the_pixels():
    """Made read-only, napari's track labels layer forgets its history: an undo then
    changes no pixel, and the table (which followed the split) stays as it is."""
    viewer, session, messages = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    out = session.tracks
    assert session.split_track(1, 3)
    pixels = np.array(labels.data)
    table = {k: v.copy() for k, v in out.table.items()}
    labels.editable = False  # napari's _on_editable_changed resets the history
    labels.editable = True
    assert session.undo_tracks() is False
    assert "no track correction to undo" in messages[-1]
    np.testing.assert_array_equal(labels.data, pixels)
    for k in table:
        np.testing.assert_array_equal(out.table[k], table[k])
    assert not out.can_undo and not out.can_redo
    # the history starts again with the next correction
    assert session.merge_tracks(1, 3) and session.undo_tracks()
    np.testing.assert_array_equal(labels.data, pixels)


def test_saving_after_painting_writes_the_painted_tracks(tmp_path):
    import csv

    viewer, session, _ = viewer_with_tracks()
    labels = viewer.layers[track_labels_name("cells")]
    labels.brush_size = 5
    labels.paint((2, 30, 10), 9)
    labels.paint((3, 30, 12), 9)
    labels.fill((5, 10, 28), 0)  # track 1 erased from frame 5
    session.save_tracks(tmp_path)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells tracks.tif"), labels.data)
    with open(tmp_path / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    nine = [r for r in rows if r["track"] == "9"]
    assert [int(r["t"]) for r in nine] == [2, 3]
    assert int(nine[0]["area"]) == int(np.sum(labels.data[2] == 9))
    assert not [r for r in rows if r["track"] == "1" and r["t"] == "5"]
    ctc = (tmp_path / "ctc" / "res_track.txt").read_text().split("\n")
    lines = {tuple(map(int, line.split())) for line in ctc if line}
    assert (9, 2, 3, 0) in lines and (1, 0, 4, 0) in lines
    mask = tifffile.imread(tmp_path / "ctc" / "mask003.tif")
    np.testing.assert_array_equal(mask == 9, labels.data[3] == 9)


def test_painting_a_volume_of_a_tz_stack_measures_it_in_3d():
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    objects2d, class_map2d = moving_disks()
    objects = np.stack([objects2d] * 3, axis=1)
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros(objects.shape, np.uint8), name="tz",
                             axis_labels=("t", "z", "y", "x"))  # fmt: skip
    session = SansaSession(viewer)
    session.tracks = TracksOutput(viewer, image, TrackSettings())
    class_map = np.stack([class_map2d] * 3, axis=1)
    session.tracks.show(*link_tracks(objects, class_map, TrackSettings(), (2.0, 1.0, 1.0)))
    labels = viewer.layers[track_labels_name("tz")]
    where = np.nonzero(labels.data[2, :2] == 1)  # track 1 erased from planes 0 and 1
    labels.data_setitem((np.full(len(where[0]), 2), *where), 0)
    table = session.tracks.table
    [row] = rows_of(table, 1, 2)
    assert table["z"][row] == 2 and table["area"][row] == np.sum(labels.data[2] == 1)
    lines = viewer.layers[tracks_name("tz")]
    assert points_of(lines, 1)[2, 2] == 2  # its z in the Tracks layer


def test_painting_through_napari_s_plugin_proxy_and_after_a_second_linking():
    """A plugin's viewer is napari's PublicOnlyProxy, which hands out a new proxy of a
    layer at each access and warns on private attributes: painting still reaches the
    tracks (also after the proxies were collected), no private attribute is read, and a
    second linking into the same layer starts a new history (napari's kept the first
    tracks' strokes, whose undo would have written them into the new tracks)."""
    import gc
    import warnings

    from napari.components import ViewerModel
    from napari.utils._proxies import PublicOnlyProxy

    objects, class_map = moving_disks()
    viewer = PublicOnlyProxy(ViewerModel())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # napari's private-access warning
        image = viewer.add_image(np.zeros((T, H, W), np.uint8), name="cells")
        out = TracksOutput(viewer, image, TrackSettings())
        out.show(*link_tracks(objects, class_map, TrackSettings()))
        out.labels = None  # no proxy of the layer kept alive
        gc.collect()
        labels = viewer.layers[track_labels_name("cells")]  # a new proxy
        out.labels = labels
        labels.brush_size = 5
        labels.paint((2, 30, 10), 9)
        assert rows_of(out.table, 9, 2).size
        before = np.array(labels.data)
        again = TracksOutput(viewer, image, TrackSettings())
        again.show(*link_tracks(objects, class_map, TrackSettings()))
        del labels, out
        gc.collect()
        labels = viewer.layers[track_labels_name("cells")]
        assert not (np.asarray(labels.data) == 9).any()  # the new tracks
        labels.undo()  # nothing to undo: the first tracks' stroke is not written back
        assert not (np.asarray(labels.data) == 9).any()
        labels.paint((3, 30, 10), 7)
        assert rows_of(again.table, 7, 3).size
        labels.undo()
        assert not rows_of(again.table, 7, 3).size and not (np.asarray(labels.data) == 7).any()
    assert before[2, 30, 10] == 9
