"""``napari-sansa segment --tracks``: track stacks, the Cell Tracking Challenge folder,
``tracks.csv``, resume and stale outputs, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference

from conftest import make_image
from napari_sansa.cli import main


@pytest.fixture
def root(tmp_path):
    write_reference(tmp_path)
    (tmp_path / "data").mkdir()
    base = make_image(40, shape=(96, 140), rgb=False)
    movie = np.stack([base[:, 3 * t : 3 * t + 128] for t in range(4)])  # a slow pan
    tifffile.imwrite(tmp_path / "data" / "movie.tif", movie, imagej=True, metadata={"axes": "TYX"})
    return tmp_path


@pytest.mark.slow
def test_tracks_write_a_track_stack_a_ctc_folder_and_tracks_csv(weights, root, capsys):
    out = root / "out"
    assert main(segment_args(weights, root, "--tracks", "--min-size", "3")) == 0
    objects = tifffile.imread(out / "movie_objects.tif")
    tracks = tifffile.imread(out / "movie_tracks.tif")
    assert tracks.shape == objects.shape == (4, 96, 128) and tracks.dtype == np.uint16
    # every object is one track, and a track has one object per frame
    fg = objects > 0
    assert np.array_equal(fg, tracks > 0)
    pairs = np.unique(np.stack([objects[fg], tracks[fg]]), axis=1)
    assert len(set(pairs[0])) == pairs.shape[1]
    for t in range(4):
        ids = tracks[t][tracks[t] > 0]
        per = np.unique(np.stack([ids, objects[t][tracks[t] > 0]]), axis=1)
        assert len(set(per[0])) == per.shape[1]
    rows = read_csv(out / "tracks.csv")
    assert list(rows[0]) == ["target", "track", "t", "y", "x", "area", "parent", "class", "object"]
    assert {(int(r["track"]), int(r["t"])) for r in rows} == {
        (int(k), t) for t in range(4) for k in np.unique(tracks[t]) if k
    }
    # the CTC folder: res_track.txt and one uint16 mask per time point, consistent
    ctc = out / "movie_ctc"
    text = (ctc / "res_track.txt").read_text()
    lines = [[int(v) for v in line.split()] for line in text.splitlines()]
    masks = [tifffile.imread(ctc / f"mask{t:03d}.tif") for t in range(4)]
    assert all(m.dtype == np.uint16 for m in masks)
    for label, b, e, p in lines:
        assert all((masks[t] == label).any() for t in range(b, e + 1))
        assert p == 0 or any(q[0] == p and q[2] < b for q in lines)
    assert {int(v) for m in masks for v in np.unique(m) if v} == {q[0] for q in lines}
    # a rerun has nothing to do; a run without --tracks removes what --tracks wrote
    assert main(segment_args(weights, root, "--tracks", "--min-size", "3")) == 0
    assert "skipped 1 already done" in capsys.readouterr().err
    (ctc / "notes.txt").write_text("mine")  # a file of the user's in the CTC folder
    assert main(segment_args(weights, root, "--instances", "--min-size", "3", "--overwrite")) == 0
    assert not (out / "movie_tracks.tif").exists() and not (out / "tracks.csv").exists()
    assert sorted(p.name for p in ctc.iterdir()) == ["notes.txt"]  # only ours went


def test_tracks_without_a_t_axis_or_over_a_foreign_folder_are_refused(weights, root, capsys):
    z = np.stack([make_image(1, rgb=False)] * 3)
    tifffile.imwrite(root / "z.tif", z, imagej=True, metadata={"axes": "ZYX"})
    assert main(segment_args(weights, root, "--tracks", target=root / "z.tif")) == 2
    assert "has no T axis" in capsys.readouterr().err
    assert not (root / "out").exists() or not list((root / "out").rglob("*.tif"))
    (root / "out" / "movie_ctc").mkdir(parents=True)
    (root / "out" / "movie_ctc" / "res_track.txt").write_text("1 0 3 0\n")
    assert main(segment_args(weights, root, "--tracks")) == 2
    assert "was not written by napari-sansa" in capsys.readouterr().err
    assert (root / "out" / "movie_ctc" / "res_track.txt").read_text() == "1 0 3 0\n"


@pytest.mark.parametrize("axes", ["TZ", "ZT"])
def test_time_frames_gather_the_planes_of_a_time_point_in_either_axis_order(axes):
    from napari_sansa.core.measures import stack_offsets
    from napari_sansa.dataset.tracks import TimeFrames

    sizes = {"T": 3, "Z": 2}
    frame_sizes = [sizes[a] for a in axes]
    arrays = np.zeros((6, 4, 5), np.uint16)
    where = {}
    for i in range(6):  # one object per plane, its id 1 in its own frame
        at = dict(zip(axes, np.unravel_index(i, frame_sizes), strict=True))
        arrays[i, int(at["Z"]), int(at["T"])] = 1
        where[i] = (int(at["T"]), int(at["Z"]))
    offsets = stack_offsets([1] * 6)
    frames = TimeFrames(arrays, offsets, np.uint16, axes, frame_sizes)
    assert frames.shape == (3, 2, 4, 5)
    for i, (t, z) in where.items():
        block = frames[t]
        assert block.shape == (2, 4, 5) and block[z, z, t] == i + 1  # the stack's id


def test_a_ctc_folder_left_by_an_interrupted_run_is_known_as_ours(tmp_path, monkeypatch):
    import napari_sansa.core.tracks as core_tracks
    from napari_sansa.core.measures import stack_offsets
    from napari_sansa.dataset.ctc import CTC_MARK
    from napari_sansa.dataset.discovery import Target
    from napari_sansa.dataset.stacks import _Scratch
    from napari_sansa.dataset.tracks import TimeFrames, write_stack_tracks

    t = Target(str(tmp_path / "movie.tif"), "movie.tif", "stack", 3)
    arrays = np.zeros((3, 8, 8), np.uint16)
    arrays[:, 2:5, 2:5] = 1
    frames = TimeFrames(arrays, stack_offsets([1, 1, 1]), np.uint16, "T", (3,))
    scratch = _Scratch(tmp_path, t)
    calls = []
    real = tifffile.imwrite

    def stop_at_the_second_mask(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", stop_at_the_second_mask)
    with pytest.raises(KeyboardInterrupt):
        write_stack_tracks(t, tmp_path, scratch, frames, {}, lambda role: {}, 3)
    folder = tmp_path / "movie_ctc"
    assert (folder / CTC_MARK).is_file() and (folder / "mask000.tif").is_file()
    monkeypatch.setattr(tifffile, "imwrite", real)
    write_stack_tracks(t, tmp_path, scratch, frames, {}, lambda role: {}, 3)  # not refused
    assert (folder / "res_track.txt").read_text() == "1 0 2 0\n"
    assert tifffile.imread(tmp_path / "movie_tracks.tif").shape == (3, 8, 8)
    assert core_tracks.ctc_file_names(3)[-1] == "res_track.txt"
    scratch.remove()
