"""Outputs of TIFF stacks keep their frame axes (recorded in the TIFF metadata), their
rows name each frame per axis, sequential runs go along one axis, objects are streamed."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import read_csv

from conftest import cli_model_args, make_image
from napari_sansa.cli import main
from napari_sansa.core.measures import object_table, stack_objects
from napari_sansa.dataset import load_reference_pair, segment_dataset
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.io import TiffStack
from napari_sansa.dataset.outputs import TiffWriter
from napari_sansa.dataset.records import table_record
from napari_sansa.dataset.settings import DatasetOptions, RunSettings
from napari_sansa.dataset.stacks import _Scratch, _StackObjects, frame_groups

H, W = 48, 64
T, Z, C = 2, 3, 2


def _tzc(path):
    """A (T, Z, C, H, W) ImageJ hyperstack of smooth images."""
    data = np.stack(
        [make_image(100 + i, shape=(H, W), rgb=False) for i in range(T * Z * C)]
    ).reshape(T, Z, C, H, W)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    return data


@pytest.fixture
def root(tmp_path):
    iio.imwrite(tmp_path / "ref.png", make_image(0, shape=(H, W), rgb=False))
    lab = np.zeros((H, W), np.uint8)
    lab[10:30, 10:40] = 1
    lab[32:44, 40:60] = 2
    iio.imwrite(tmp_path / "ref_labels.png", lab)
    (tmp_path / "data").mkdir()
    _tzc(tmp_path / "data" / "hyper.tif")
    return tmp_path


def _args(weights, root, *extra):
    ref = ["-r", str(root / "ref.png"), str(root / "ref_labels.png")]
    return ["segment", str(root / "data"), *ref, "--out", str(root / "out"),
            *cli_model_args(weights), *extra]  # fmt: skip


def _axes(path):
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes, tuple(tif.series[0].shape)


def test_a_tzcyx_stack_gives_tzyx_outputs_with_their_axes_recorded(weights, root, capsys):
    assert main(_args(weights, root, "--probabilities", "--instances")) == 0
    out = root / "out"
    assert _axes(out / "hyper.tif") == ("TZYX", (T, Z, H, W))
    assert _axes(out / "hyper_probabilities.tif") == ("TZCYX", (T, Z, 2, H, W))
    assert _axes(out / "hyper_objects.tif") == ("TZYX", (T, Z, H, W))
    assert tifffile.imread(out / "hyper.tif").shape == (T, Z, H, W)  # as napari opens it
    # the default channel is said, in the log and in the record
    assert "channel 0 as gray (choose others with --channels)" in capsys.readouterr().err
    record = json.loads(tifffile.TiffFile(out / "hyper.tif").pages[0].description)
    assert record["napari_sansa"]["channels"] == [0]
    assert record["napari_sansa"]["frames"] == {"axes": "TZ", "sizes": [T, Z]}
    # rows name each frame by its index per axis, beside the flat frame number
    rows = read_csv(out / "scores.csv")
    assert list(rows[0])[:5] == ["target", "frame", "t", "z", "output"]
    at = [(int(r["frame"]), int(r["t"]), int(r["z"])) for r in rows]
    assert at == [(t * Z + z, t, z) for t in range(T) for z in range(Z)]
    # 3D objects (the default on a stack with a Z axis): one row per object of a time
    # point, which spans planes (no frame); its time point in the t column
    objects = read_csv(out / "objects.csv")
    assert list(objects[0])[:3] == ["target", "frame", "t"]
    stack = tifffile.imread(out / "hyper_objects.tif")
    for r in objects:
        assert r["frame"] == "" and "z" not in r
        assert int(r["volume"]) == int((stack[int(r["t"])] == int(r["object"])).sum())


def test_resume_skips_finished_stacks_and_reads_0_1_outputs_as_done(weights, root, capsys):
    out = root / "out"
    assert main(_args(weights, root)) == 0
    before = (out / "hyper.tif").stat().st_mtime_ns
    assert main(_args(weights, root)) == 0
    assert (out / "hyper.tif").stat().st_mtime_ns == before
    assert "skipped 1 already done" in capsys.readouterr().err

    # a 3D stack labelled by 0.1, whose record names no axes: done, its rows as they were
    movie = np.stack([make_image(i, (H, W), False) for i in range(3)])
    tifffile.imwrite(root / "data" / "movie.tif", movie, photometric="minisblack")
    assert main(_args(weights, root)) == 0
    desc = json.loads(tifffile.TiffFile(out / "movie.tif").pages[0].description)
    assert desc["axes"] == "QYX"  # one axis of unknown meaning stays as it came
    for key in ("axes",):
        desc.pop(key)
    desc["napari_sansa"].pop("frames")
    tifffile.tiffcomment(out / "movie.tif", json.dumps(desc))
    before = (out / "movie.tif").stat().st_mtime_ns
    assert main(_args(weights, root)) == 0
    assert (out / "movie.tif").stat().st_mtime_ns == before
    rows = [r for r in read_csv(out / "scores.csv") if r["target"].endswith("movie.tif")]
    assert [r["frame"] for r in rows] == ["0", "1", "2"]
    assert all(r["t"] == r["z"] == "" for r in rows)


def test_a_stack_whose_channels_an_earlier_version_made_frames_is_labelled_again(weights, root):
    out = root / "out"
    assert main(_args(weights, root)) == 0
    desc = json.loads(tifffile.TiffFile(out / "hyper.tif").pages[0].description)
    desc.pop("axes")
    info = desc["napari_sansa"]
    info.pop("frames")
    info["scores"] *= C  # as before: T x Z x C frames
    tifffile.tiffcomment(out / "hyper.tif", json.dumps(desc))
    assert main(_args(weights, root)) == 0
    assert _axes(out / "hyper.tif") == ("TZYX", (T, Z, H, W))
    assert (
        "frames"
        in json.loads(tifffile.TiffFile(out / "hyper.tif").pages[0].description)["napari_sansa"]
    )


def test_frame_groups_follow_the_sequential_axis(tmp_path):
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, np.zeros((T, Z, 8, 8), np.uint8), imagej=True,
                     metadata={"axes": "TZYX"})  # fmt: skip
    seq = RunSettings(DatasetOptions.make(mode="sequential"))
    with TiffStack(path) as stack:
        assert frame_groups(stack, RunSettings()) == [list(range(T * Z))]
        assert frame_groups(stack, seq) == [[0, 1, 2], [3, 4, 5]]  # Z within each time point
        along_t = RunSettings(DatasetOptions.make(mode="sequential", sequential_axis="T"))
        assert frame_groups(stack, along_t) == [[0, 3], [1, 4], [2, 5]]  # T for each Z


@pytest.mark.parametrize("along", ["Z", "T"])
def test_sequential_runs_along_one_axis_never_across_a_boundary(recomputing_model, root, along):
    model = recomputing_model
    data = _tzc(root / "data" / "hyper.tif")[:, :, 0]  # the frames: channel 0
    refs = [load_reference_pair(root / "ref.png", root / "ref_labels.png")]
    out = root / "out"
    segment_dataset([root / "data"], refs, out, model=model, mode="sequential",
                    sequential_axis=along, probabilities=True, progress=False)  # fmt: skip
    got = tifffile.imread(out / "hyper_probabilities.tif")  # (T, Z, class, H, W)
    memory = model.prepare_references(refs, input_size=640, threshold=0.5)

    def sequence(frames):
        preds = model.segment_iter(memory, list(frames), mode="sequential", threshold=0.5)
        return np.stack([np.stack([p.probabilities[c] for c in (1, 2)]) for p in preds])

    if along == "Z":
        expected = np.stack([sequence(data[t]) for t in range(T)])
    else:
        expected = np.stack([sequence(data[:, z]) for z in range(Z)], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    across = sequence(data.reshape(T * Z, H, W)).reshape(expected.shape)  # 0.1's flat run
    assert not np.allclose(across, expected, atol=1e-5)  # the boundary matters


def test_stack_objects_are_kept_in_a_scratch_file_with_todays_ids(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for n, dtype in [(3, np.uint16), (0, np.uint16), (70000, np.uint32)]:
        obj = np.zeros((H, W), dtype)
        if n:
            obj.flat[rng.choice(H * W, 3, replace=False)] = [1, 2, n]
        frames.append((obj, object_table(obj, np.where(obj > 0, 1, 0))))
    expected, table = stack_objects(frames)
    assert expected.dtype == np.uint32 and expected.max() == 70003
    objects = _StackObjects(_Scratch(tmp_path, Target("s.tif", "s.tif", "stack", 3)), 3, (H, W))
    for f in (2, 0):  # any order: the ids are made when the stack is written
        objects.add(f, frames[f])
    objects.add(1, None)  # a blank frame: no objects
    assert isinstance(objects.arrays, np.memmap)  # on disk, not a list in memory

    def record(role, objects):
        return {"output": role, "objects": table_record(objects)}

    objects.write(Target("s.tif", "s.tif", "stack", 3), tmp_path, (3, H, W), "QYX", record)
    written = tifffile.imread(tmp_path / "s_objects.tif")
    np.testing.assert_array_equal(written, expected)
    assert written.dtype == expected.dtype
    rows = TiffWriter.read_record(tmp_path / "s_objects.tif")["objects"]["rows"]
    assert [r[1] for r in rows] == list(table["object"])  # ids as stack_objects gives them
