"""Tracks through time (core.tracks): linking, divisions, merges, gaps, holes, dtypes,
frame-by-frame reading and the Cell Tracking Challenge format."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from synthetic_tracks import ctc_scores, shuffled, time_lapse, write_ctc_truth

import napari_sansa as ns
from napari_sansa.core.tracks import ctc_tracks


def disk(shape, centre, r):
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < r * r


def frames_of(*frames):
    return np.stack(frames).astype(np.uint16)


def paint(shape, *objects):
    """One frame: ``objects`` are ``(id, centre, radius)``."""
    out = np.zeros(shape, np.uint16)
    for label, centre, r in objects:
        out[disk(shape, centre, r)] = label
    return out


def same_partition(truth, tracks):
    """Every true track is one of ours and the reverse (ids may differ)."""
    fg = truth > 0
    pairs = np.unique(np.stack([truth[fg], tracks[fg]]), axis=1)
    return (tracks[~fg] == 0).all() and len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_time_lapse_is_tracked_as_the_truth(seed):
    truth, lines = time_lapse(seed, n_frames=25, size=96, n_cells=6)
    assert (lines[:, 3] > 0).any()  # it has divisions
    tracks, table = ns.track_objects(shuffled(truth, seed))
    assert same_partition(truth, tracks)
    # the parents are those of the truth, through the one-to-one map of the ids
    fg = truth > 0
    ours = dict(zip(truth[fg].tolist(), tracks[fg].tolist(), strict=False))
    summary = table.summary()
    parent = dict(zip(summary["track"].tolist(), summary["parent"].tolist(), strict=True))
    for label, _b, _e, p in lines.tolist():
        assert parent[ours[label]] == (ours[p] if p else 0)


def test_division_daughters_are_new_tracks_with_the_parent():
    s = (40, 60)
    f0 = paint(s, (5, (20, 30), 10))
    f1 = paint(s, (9, (20, 31), 10))
    f2 = paint(s, (3, (20, 24), 7), (4, (20, 38), 7))  # the two halves
    f3 = paint(s, (1, (20, 21), 7), (2, (20, 41), 7))
    tracks, table = ns.track_objects(frames_of(f0, f1, f2, f3))
    summary = table.summary()
    assert summary["track"].tolist() == [1, 2, 3]
    assert summary["start"].tolist() == [0, 2, 2] and summary["end"].tolist() == [1, 3, 3]
    assert summary["parent"].tolist() == [0, 1, 1]
    assert set(np.unique(tracks[2])) == {0, 2, 3}
    assert tracks[3][20, 21] == tracks[2][20, 24]  # each daughter keeps its track
    assert table.graph() == {2: [1], 3: [1]}
    lines, _ = ctc_tracks(table)
    assert lines.tolist() == [[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]]
    # without divisions the larger overlap goes on and the other daughter starts alone
    _, plain = ns.track_objects(frames_of(f0, f1, f2, f3), divisions=False)
    assert plain.summary()["parent"].tolist() == [0, 0]


def test_merge_continues_one_track_and_ends_the_other():
    s = (40, 80)
    f0 = paint(s, (1, (20, 25), 8), (2, (20, 55), 8))
    f1 = paint(s, (1, (20, 30), 8), (2, (20, 49), 8))
    merged = np.zeros(s, np.uint16)
    merged[disk(s, (20, 33), 9) | disk(s, (20, 47), 9)] = 7  # one object
    tracks, table = ns.track_objects(frames_of(f0, f1, merged, merged), gap=0)
    summary = table.summary()
    assert len(summary["track"]) == 2 and summary["parent"].tolist() == [0, 0]
    ends = dict(zip(summary["track"].tolist(), summary["end"].tolist(), strict=True))
    assert sorted(ends.values()) == [1, 3]  # one ends at the merge, the other goes on
    assert np.unique(tracks[2][tracks[2] > 0]).size == 1


def test_a_gap_of_one_frame_is_bridged_and_gap_zero_does_not():
    s = (40, 40)
    f = [paint(s, (3, (20, 10 + 3 * t), 6)) for t in range(5)]
    f[2][:] = 0  # an empty frame in the middle of the track
    tracks, table = ns.track_objects(frames_of(*f))
    assert np.unique(tracks[tracks > 0]).tolist() == [1]
    summary = table.summary()
    assert summary["start"].tolist() == [0] and summary["end"].tolist() == [4]
    assert summary["frames"].tolist() == [4]  # no row for the empty frame
    # CTC tracks are continuous: the part after the gap is a new track, parent the first
    lines, labels = ctc_tracks(table)
    assert lines.tolist() == [[1, 0, 1, 0], [2, 3, 4, 1]]
    assert labels[(1, 4)] == 2
    _, no_gap = ns.track_objects(frames_of(*f), gap=0)
    assert no_gap.summary()["track"].tolist() == [1, 2]


def test_a_hole_in_the_frame_range_ends_every_track_and_says_so():
    s = (30, 30)
    f = [paint(s, (1, (15, 10 + t), 5)) for t in range(4)]
    with pytest.warns(UserWarning, match=r"holes \(1 -> 5\)"):
        tracks, table = ns.track_objects(frames_of(*f), frames=[0, 1, 5, 6])
    assert table.breaks == [(1, 5)]
    assert table.summary()["track"].tolist() == [1, 2]
    assert table["t"].tolist() == [0, 1, 5, 6]
    assert tracks[2].max() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ns.track_objects(frames_of(*f), frames=[3, 4, 5, 6])  # no hole: no warning


def test_more_tracks_than_uint16_holds_widen_the_type():
    frame = np.arange(1, 256 * 257 + 1, dtype=np.uint32).reshape(256, 257)  # 65792 objects
    objects = np.stack([frame, frame])
    with pytest.warns(UserWarning, match="holes"):
        tracks, table = ns.track_objects(objects, frames=[0, 2], divisions=False, overlap=False)
    assert tracks.dtype == np.uint32
    assert int(tracks.max()) == 2 * frame.size and len(np.unique(tracks)) == 2 * frame.size
    out = np.zeros(objects.shape, np.uint16)
    with (
        pytest.warns(UserWarning, match="holes"),
        pytest.raises(ns.InvalidInputError, match="too narrow"),
    ):
        ns.track_objects(objects, frames=[0, 2], divisions=False, overlap=False, out=out)


def test_the_same_input_gives_the_same_ids_and_table():
    truth, _ = time_lapse(3, n_frames=12, size=80, n_cells=5)
    objects = shuffled(truth, 3)
    a, ta = ns.track_objects(objects)
    b, tb = ns.track_objects(objects.copy())
    assert np.array_equal(a, b)
    assert all(np.array_equal(ta[c], tb[c]) for c in ta.columns)
    assert ta.columns == ("track", "t", "y", "x", "area", "parent", "object")


class Counting:
    """An array that counts its reads and refuses to be read whole."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        assert isinstance(key, int), f"read {key!r}: not one frame"
        self.reads.append(key)
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was read")


def test_frames_are_read_one_at_a_time_from_memmap_zarr_and_dask(tmp_path):
    truth, _ = time_lapse(1, n_frames=8, size=64, n_cells=4)
    objects = shuffled(truth, 1)
    expected, _ = ns.track_objects(objects)
    counting = Counting(objects)
    tracks, _ = ns.track_objects(counting)
    assert counting.reads == list(range(8)) * 2  # once to link, once to write
    assert np.array_equal(tracks, expected)
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", "w+", np.uint16, objects.shape)
    mm[:] = objects
    out = np.lib.format.open_memmap(tmp_path / "t.npy", "w+", np.uint32, objects.shape)
    got, _ = ns.track_objects(Counting(mm), out=out)
    assert got is out and np.array_equal(out, expected)
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        store=str(tmp_path / "o.zarr"), shape=objects.shape, chunks=(1, 64, 64), dtype="u2"
    )
    z[:] = objects
    zout = zarr.create_array(
        store=str(tmp_path / "t.zarr"), shape=objects.shape, chunks=(1, 64, 64), dtype="u4"
    )
    ns.track_objects(Counting(z), out=zout)
    assert np.array_equal(zout[:], expected)
    da = pytest.importorskip("dask.array")
    got, _ = ns.track_objects(Counting(da.from_array(objects, chunks=(1, 64, 64))))
    assert np.array_equal(got, expected)


def test_3d_objects_with_spacing_and_classes():
    shape = (5, 12, 30, 30)
    objects = np.zeros(shape, np.uint16)
    classes = np.zeros(shape, np.uint8)
    zz, rows, cols = np.indices(shape[1:])
    for t in range(shape[0]):
        ball = (zz - 6) ** 2 * 4 + (rows - 10) ** 2 + (cols - 8 - 2 * t) ** 2 < 25
        objects[t][ball] = 1 + t  # ids unrelated from frame to frame
        classes[t][ball] = 1
        other = (zz - 6) ** 2 * 4 + (rows - 22) ** 2 + (cols - 15) ** 2 < 16
        objects[t][other] = 10
        classes[t][other] = 2 if t < 3 else 1  # changes class at t = 3: a new track
    tracks, table = ns.track_objects(objects, spacing=(2.0, 1.0, 1.0), classes=classes)
    assert table.columns == ("track", "t", "z", "y", "x", "area", "parent", "class", "object")
    summary = table.summary()
    assert summary["start"].tolist() == [0, 0, 3] and summary["end"].tolist() == [4, 2, 4]
    rows1 = table["track"] == 1
    assert np.allclose(table["z"][rows1], 6) and np.allclose(table["x"][rows1], 8 + 2 * np.r_[:5])
    assert table["class"][table["track"] == 2].tolist() == [2, 2, 2]
    data, graph = table.napari_tracks()
    assert data.shape == (len(table), 5) and graph == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objects": np.zeros((4, 4), np.uint16)}, "T axis"),
        ({"objects": np.zeros((2, 4, 4), np.float32)}, "integer"),
        ({"spacing": (1, 0)}, "positive"),
        ({"spacing": (1, 1, 1)}, "one size per spatial axis"),
        ({"gap": -1}, "gap"),
        ({"max_distance": 0}, "max_distance"),
        ({"frames": [0, 0]}, "increasing"),
        ({"frames": [0]}, "time index of each"),
        ({"classes": np.zeros((2, 3, 3), np.uint8)}, "class map"),
        ({"out": np.zeros((2, 4, 4), np.float32)}, "out must be"),
    ],
)
def test_bad_input_is_refused_with_what_to_change(kwargs, match):
    kwargs = {"objects": np.zeros((2, 4, 4), np.uint16), **kwargs}
    with pytest.raises(ns.InvalidInputError, match=match):
        ns.track_objects(kwargs.pop("objects"), **kwargs)


def test_negative_ids_are_refused():
    with pytest.raises(ns.InvalidInputError, match="negative"):
        ns.track_objects(-np.ones((2, 4, 4), np.int16))


def test_ctc_round_trip_scores_one_against_the_truth(tmp_path):
    pytest.importorskip("ctc_metrics")
    truth, lines = time_lapse(2, n_frames=15, size=80, n_cells=5, divide=0.08)
    tracks, table = ns.track_objects(shuffled(truth, 2))
    written = ns.write_ctc(tmp_path / "res", tracks, table)
    assert [p.name for p in written[:2]] == ["mask000.tif", "mask001.tif"]
    import tifffile

    mask = tifffile.imread(tmp_path / "res" / "mask003.tif")
    assert mask.dtype == np.uint16 and mask.shape == truth.shape[1:]
    text = (tmp_path / "res" / "res_track.txt").read_text().splitlines()
    parsed = np.array([[int(v) for v in line.split(" ")] for line in text])
    assert parsed.tolist() == ctc_tracks(table)[0].tolist()
    for label, b, e, _ in parsed.tolist():  # every label is in its masks from B to E
        for t in range(b, e + 1):
            assert (tifffile.imread(tmp_path / "res" / f"mask{t:03d}.tif") == label).any()
    write_ctc_truth(tmp_path / "gt", truth, lines)
    scores = ctc_scores(tmp_path / "res", tmp_path / "gt", ("TRA", "LNK"))
    assert scores["TRA"] == pytest.approx(1.0) and scores["LNK"] == pytest.approx(1.0)


def test_predictions_of_a_time_lapse_are_tracked_with_their_labels_as_classes():
    from types import SimpleNamespace

    s = (30, 40)
    preds = []
    for t in range(3):
        objects = paint(s, (2, (10, 8 + 2 * t), 5), (1, (22, 30), 5))
        labels = np.where(objects == 2, 1, np.where(objects == 1, 2, 0)).astype(np.uint8)
        preds.append(SimpleNamespace(objects=objects, labels=labels, shape=s))
    tracks, table = ns.track_objects(preds)
    assert tracks.shape == (3, *s)
    assert table.summary()["track"].tolist() == [1, 2]
    pairs = set(zip(table["track"].tolist(), table["class"].tolist(), strict=True))
    assert sorted(pairs) == [(1, 2), (2, 1)]
    preds[1] = SimpleNamespace(objects=np.zeros((5, 5), np.uint16), labels=None, shape=(5, 5))
    with pytest.raises(ns.InvalidInputError, match="different shapes"):
        ns.track_objects(preds)


def test_a_stack_without_objects_gives_empty_tracks_and_an_empty_ctc_result(tmp_path):
    tracks, table = ns.track_objects(np.zeros((3, 8, 8), np.uint16))
    assert not tracks.any() and len(table) == 0 and table.summary()["track"].size == 0
    ns.write_ctc(tmp_path, tracks, table)
    assert (tmp_path / "res_track.txt").read_text() == ""
    assert sorted(p.name for p in tmp_path.glob("mask*.tif")) == [
        f"mask00{t}.tif" for t in range(3)
    ]


def test_ctc_frames_are_positions_in_the_stack_when_t_has_holes(tmp_path):
    s = (30, 30)
    f = [paint(s, (1, (15, 10 + t), 5)) for t in range(4)]
    with pytest.warns(UserWarning, match="holes"):
        tracks, table = ns.track_objects(frames_of(*f), frames=[0, 1, 5, 6])
    lines, _ = ctc_tracks(table, positions=[0, 1, 5, 6])
    assert lines.tolist() == [[1, 0, 1, 0], [2, 2, 3, 0]]
    ns.write_ctc(tmp_path, tracks, table, positions=[0, 1, 5, 6])
    assert (tmp_path / "res_track.txt").read_text() == "1 0 1 0\n2 2 3 0\n"


def test_dataset_options_tracks_imply_objects_and_join_the_record_only_when_set():
    from napari_sansa.dataset import DatasetOptions

    plain = DatasetOptions.make()
    assert "tracks" not in plain.record() and plain.segment.instances is None
    tracked = DatasetOptions.make(tracks=True)
    assert tracked.record()["tracks"] is True and tracked.segment.instances is not None
    kept = DatasetOptions.make(tracks=True, instances={"min_size": 3})
    assert kept.segment.instances.min_size == 3
    with pytest.raises(ns.InvalidInputError, match="tracks"):
        DatasetOptions.make(tracks="yes")


def test_a_3d_time_lapse_gives_3d_ctc_masks(tmp_path):
    import tifffile

    objects = np.zeros((3, 4, 10, 10), np.uint16)
    for t in range(3):
        objects[t, 1:3, 2 + t : 5 + t, 3:6] = 5 - t
    tracks, table = ns.track_objects(objects, spacing=(3.0, 1.0, 1.0))
    assert table.summary()["track"].tolist() == [1]
    ns.write_ctc(tmp_path, tracks, table)
    with tifffile.TiffFile(tmp_path / "mask002.tif") as tif:  # pages of gray, not RGB
        assert len(tif.pages) == 4 and tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        mask = tif.asarray()
    assert mask.shape == (4, 10, 10) and mask.dtype == np.uint16
    assert np.array_equal(mask > 0, objects[2] > 0)
    assert (tmp_path / "res_track.txt").read_text() == "1 0 2 0\n"


def test_track_table_measures_a_corrected_track_map():
    truth, _ = time_lapse(4, n_frames=10, size=80, n_cells=5, divide=0.1)
    tracks, table = ns.track_objects(shuffled(truth, 4))
    s = table.summary()
    parents = dict(zip(s["track"].tolist(), s["parent"].tolist(), strict=True))
    again = ns.track_table(tracks, parents)
    assert again.columns == ("track", "t", "y", "x", "area", "parent")
    for c in again.columns:
        assert np.allclose(again[c], table[c])
    merged = tracks.copy()  # a correction: track 2 becomes track 1
    merged[merged == 2] = 1
    fixed = ns.track_table(merged, {k: v for k, v in parents.items() if k != 2})
    frames_of_both = set(table["t"][np.isin(table["track"], [1, 2])].tolist())
    assert 2 not in fixed["track"]
    assert sorted(fixed["t"][fixed["track"] == 1].tolist()) == sorted(frames_of_both)
