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


@pytest.mark.slow
def test_a_tzyx_stack_tracks_its_3d_objects_one_track_per_object_across_its_planes(
    weights, root, capsys
):
    base = make_image(41, shape=(96, 140), rgb=False)
    movie = np.stack([np.stack([base[:, 3 * t : 3 * t + 128]] * 3) for t in range(3)])
    meta = {"axes": "TZYX", "spacing": 2.0}
    tifffile.imwrite(root / "data" / "movie.tif", movie, imagej=True, metadata=meta)
    out = root / "out"
    assert main(segment_args(weights, root, "--tracks", "--min-size", "3")) == 0
    objects = tifffile.imread(out / "movie_objects.tif")
    tracks = tifffile.imread(out / "movie_tracks.tif")
    assert tracks.shape == objects.shape == (3, 3, 96, 128)
    fg = objects > 0
    assert fg.any() and np.array_equal(fg, tracks > 0)
    # 3D objects: an object's id is the same on every plane of its time point, and so
    # is its track; each track holds one object per time point
    for t in range(3):
        per = np.unique(np.stack([objects[t][fg[t]], tracks[t][fg[t]]]), axis=1)
        assert len(set(per[0])) == len(set(per[1])) == per.shape[1]
    rows = read_csv(out / "tracks.csv")
    assert "z" in rows[0]
    assert {(int(r["track"]), int(r["t"])) for r in rows} == {
        (int(k), t) for t in range(3) for k in np.unique(tracks[t]) if k
    }
    assert len(rows) == len({(r["track"], r["t"]) for r in rows})


@pytest.mark.slow
def test_tracks_with_ome_zarr_outputs(weights, root):
    import zarr

    out = root / "out"
    args = segment_args(weights, root, "--tracks", "--min-size", "3", "--format", "ome-zarr")
    assert main(args) == 0
    assert (out / "movie_ctc" / "res_track.txt").is_file()
    tracks = zarr.open_group(str(out / "movie_tracks.ome.zarr"), mode="r")
    objects = zarr.open_group(str(out / "movie_objects.ome.zarr"), mode="r")
    t0 = np.asarray(tracks[tracks.attrs["labels"][0]]["0"])
    o0 = np.asarray(objects[objects.attrs["labels"][0]]["0"])
    assert t0.shape == o0.shape and np.array_equal(t0 > 0, o0 > 0) and (t0 > 0).any()
    assert main(args) == 0  # a rerun finds the target finished


@pytest.mark.slow
def test_follow_links_on_where_sam2_carries_the_objects_on_the_runs_features(
    weights, root, propagations, capsys
):
    """--follow: each stack's objects are carried by SAM2 on the features its run
    computed (kept on disk in the scratch folder, none encoded again, removed after),
    a (T, Y, X) movie and a (T, Z, Y, X) stack alike; the tracks are the core's."""
    import napari_sansa as ns
    from conftest import load_test_model

    made = propagations
    base = make_image(41, shape=(80, 120), rgb=False)
    # two planes unlike each other (plane 1 mirrored): each carried on its own images
    tz = np.stack([np.stack([base[:, 4 * t : 4 * t + 96], base[::-1, 20 - 4 * t : 116 - 4 * t]])
                   for t in range(3)])  # fmt: skip
    tifffile.imwrite(root / "data" / "tz.tif", tz, imagej=True, metadata={"axes": "TZYX"})
    out = root / "out"
    assert main(segment_args(weights, root, "--follow", "--min-size", "45")) == 0
    assert len(made) == 2
    assert [(c.encoded, c.reused) for c in made] == [(0, 4), (0, 6)]  # the run's features
    assert not list((out / ".napari-sansa").glob("*/features"))  # the scratch is gone
    model = load_test_model(weights)
    for name, frames in (("movie", tifffile.imread(root / "data" / "movie.tif")), ("tz", tz)):
        objects = tifffile.imread(out / f"{name}_objects.tif")
        labels = tifffile.imread(out / f"{name}.tif")
        carried = next(c for c in made if len(c.images) == len(frames))
        moved = ns.propagate_objects(
            model,
            list(frames),
            objects,
            input_size=carried.pre.input_size,
            intensity_range=carried.pre.intensity_range,
        )
        want, _ = ns.track_objects(objects, classes=labels, moved=moved, spacing=None)
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_tracks.tif"), want)
    # the features of a run killed while following are removed by the next run, which
    # they do not block
    leftover = out / ".napari-sansa" / ("ab" * 20) / "features" / "napari-sansa-features"
    (leftover / "0a").mkdir(parents=True)
    (leftover / "0a" / ("1" * 40 + ".npz")).write_bytes(b"killed")
    assert main(segment_args(weights, root, "--follow", "--min-size", "45")) == 0  # done
    before = tifffile.imread(out / "tz_tracks.tif")
    (out / "tz_tracks.tif").unlink()  # (as if killed before it was written)
    assert main(segment_args(weights, root, "--follow", "--min-size", "45")) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "tz_tracks.tif"), before)
    assert not (out / ".napari-sansa" / ("ab" * 20)).exists()
    # following is part of what the tracks depend on: a run by overlap is another run
    capsys.readouterr()
    assert main(segment_args(weights, root, "--tracks", "--min-size", "45")) == 2
    assert "--overwrite" in capsys.readouterr().err
    # and it needs whole frames
    assert main(segment_args(weights, root, "--follow", "--tile-size", "64")) == 2
    assert "--tile-size" in capsys.readouterr().err
    # --max-move: how far a (T, Y, X) stack's carried masks reach, and how far a cell moves
    assert main(segment_args(weights, root, "--follow", "--min-size", "45", "--max-move", "9",
                             "--overwrite")) == 0  # fmt: skip
    frames = tifffile.imread(root / "data" / "movie.tif")
    objects = tifffile.imread(out / "movie_objects.tif")
    carried = made[-2] if len(made[-1].images) != len(frames) else made[-1]
    assert carried.reach == 9.0
    moved = ns.propagate_objects(model, list(frames), objects, reach=9.0,
                                 input_size=carried.pre.input_size,
                                 intensity_range=carried.pre.intensity_range)  # fmt: skip
    want, _ = ns.track_objects(objects, classes=tifffile.imread(out / "movie.tif"), moved=moved,
                               max_distance=9.0)  # fmt: skip
    np.testing.assert_array_equal(tifffile.imread(out / "movie_tracks.tif"), want)
    assert next(c for c in made[-2:] if len(c.images) == len(tz)).reach is None  # T x Z
    # given without tracks: refused
    assert main(segment_args(weights, root, "--max-move", "9")) == 2
    assert "--max-move must be given only with --tracks" in capsys.readouterr().err


@pytest.mark.slow
def test_follow_keeps_its_features_within_half_the_free_disk(
    weights, root, propagations, monkeypatch, capsys
):
    """--follow's features on disk take at most half the space free when a stack begins:
    the frames whose entries were dropped for room are encoded again to carry their
    objects (the log says how many) and not stored again (that would drop an entry still
    to be read); an entry that could never fit is not written; the tracks are the same."""
    from napari_sansa.core import cache
    from napari_sansa.dataset import stacks

    out = root / "out"
    args = segment_args(weights, root, "--follow", "--min-size", "45")
    written = []  # the size of each entry written to the disk cache
    account = cache.DiskFeatureCache._account

    def counted(self, path):
        written.append(path.stat().st_size)
        return account(self, path)

    monkeypatch.setattr(cache.DiskFeatureCache, "_account", counted)
    assert main(args) == 0
    assert [c.encoded for c in propagations] == [0] and len(written) == 4  # room for all
    want = tifffile.imread(out / "movie_tracks.tif")
    entry, asked = max(written), []

    def free(bytes_free):
        def disk_usage(folder):
            asked.append(folder)
            return bytes_free

        return disk_usage

    # room for two entries: frames 2 and 3 are kept (the last used), 0 and 1 come again
    monkeypatch.setattr(stacks, "free_disk_bytes", free(2 * (2 * entry + entry // 2)))
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0
    assert propagations[-1].encoded == 2 and propagations[-1].reused == 2
    assert len(written) == 8  # the 4 frames labelled; none stored while carrying
    assert "(2 image(s) encoded again)" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out / "movie_tracks.tif"), want)
    # no room: nothing written, every frame encoded again
    monkeypatch.setattr(stacks, "free_disk_bytes", free(1))
    assert main([*args, "--overwrite"]) == 0
    assert propagations[-1].encoded == 4 and len(written) == 8
    assert "(4 image(s) encoded again)" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out / "movie_tracks.tif"), want)
    assert [f.parent.name for f in asked] == [".napari-sansa"] * 2  # the stack's scratch
    assert not list((out / ".napari-sansa").glob("*/features"))


def _track_outputs(out, names) -> dict:
    """Every file ``--tracks`` writes for the stacks ``names`` in ``out``, read back."""
    found = {"tracks.csv": (out / "tracks.csv").read_text()}
    for name in names:
        found[f"{name}_tracks.tif"] = tifffile.imread(out / f"{name}_tracks.tif")
        found[f"{name}_objects.tif"] = tifffile.imread(out / f"{name}_objects.tif")
        ctc = out / f"{name}_ctc"
        for p in sorted(ctc.iterdir()):
            if p.suffix == ".tif":
                found[f"{name}_ctc/{p.name}"] = tifffile.imread(p)
            elif p.suffix == ".txt":
                found[f"{name}_ctc/{p.name}"] = p.read_text()
    return found


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], str):
            assert a[k] == b[k], k
        else:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_dask_tracks_of_tyx_and_tzyx_stacks_match_a_local_run_and_resume(weights, root, capsys):
    """A Dask cluster (one worker process) writes the track stacks, the CTC folders and
    tracks.csv of a (T, Y, X) and a (T, Z, Y, X) time-lapse as a local run does; a run
    interrupted before a track stack was written redoes only that stack; --follow too."""
    distributed = pytest.importorskip("dask.distributed")
    base = make_image(41, shape=(96, 140), rgb=False)
    pan = [base[:, 3 * t : 3 * t + 128] for t in range(3)]
    tifffile.imwrite(
        root / "data" / "movie.tif", np.stack(pan), imagej=True, metadata={"axes": "TYX"}
    )
    volume = np.stack([np.stack([p, p[::-1]]) for p in pan[:2]])  # 2 time points of 2 planes
    meta = {"axes": "TZYX", "spacing": 2.0}
    tifffile.imwrite(root / "data" / "vol.tif", volume, imagej=True, metadata=meta)
    names = ("movie", "vol")
    local = segment_args(weights, root, "--tracks", "--min-size", "3", out=root / "local")
    assert main(local) == 0
    expected = _track_outputs(root / "local", names)
    assert expected["vol_tracks.tif"].shape == (2, 2, 96, 128) and expected["vol_tracks.tif"].any()
    assert len(expected) == 1 + 2 * 3 + 3 + 2  # csv; per stack tracks, objects, res_track
    assert {r["target"].rsplit("/", 1)[-1] for r in read_csv(root / "local" / "tracks.csv")} == {
        "movie.tif",
        "vol.tif",
    }
    out = root / "dist"
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env={"OMP_NUM_THREADS": "1"},
    ) as cluster:  # fmt: skip
        dist = [
            *segment_args(weights, root, "--tracks", "--min-size", "3", out=out),
            "--scheduler",
            cluster.scheduler_address,
        ]
        assert main(dist) == 0
        _same(expected, _track_outputs(out, names))
        # interrupted before vol's track stack was written (it is written last): a rerun
        # redoes vol only, and tracks.csv gets its rows back
        (out / "vol_tracks.tif").unlink()
        kept = {p.name: p.stat().st_mtime_ns for p in out.glob("movie*.tif")}
        capsys.readouterr()
        assert main(dist) == 0
        assert "skipped 1 already done" in capsys.readouterr().err
        assert {p.name: p.stat().st_mtime_ns for p in out.glob("movie*.tif")} == kept
        _same(expected, _track_outputs(out, names))

        # --follow on the cluster: the worker that labels a stack keeps its features in the
        # stack's scratch folder and carries its objects there: the local run's tracks
        # (objects of 200 pixels and up: each object is carried on its own)
        def run(how, to, *cluster_args):
            args = segment_args(weights, root, how, "--min-size", "200", out=root / to)
            assert main([*args, *cluster_args]) == 0
            return _track_outputs(root / to, names)

        followed = run("--follow", "lf")
        assert any(  # on these frames SAM2's carried masks link otherwise than overlaps
            not np.array_equal(a, b)
            for a, b in zip(followed.values(), run("--tracks", "lt").values(), strict=True)
            if not isinstance(a, str)
        )
        _same(followed, run("--follow", "df", "--scheduler", cluster.scheduler_address))
        out = root / "df"
        assert not list((out / ".napari-sansa").glob("*/features"))
