"""The `napari-sansa segment` command and `segment_dataset`: folders, stacks, resume, failures."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import write_reference, write_targets

from conftest import cli_model_args, make_image
from napari_sansa.cli import main
from napari_sansa.core.atomic import PARTIAL


@pytest.fixture()
def dataset(tmp_path):
    """A folder tree of targets, one reference with its label image."""
    data = write_targets(tmp_path / "data", 3)
    (data / "day2").mkdir()
    iio.imwrite(data / "day2" / "img10.png", make_image(20, shape=(64, 80)))
    write_reference(tmp_path)
    return tmp_path


def _args(weights, root, *extra, out="out"):
    return [
        "segment",
        str(root / "data"),
        "--reference",
        str(root / "ref.png"),
        str(root / "ref_labels.png"),
        "--out",
        str(root / out),
        *cli_model_args(weights),
        *extra,
    ]


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_folder_tree_end_to_end(weights, dataset):
    assert main(_args(weights, dataset, "--probabilities")) == 0
    out = dataset / "out"
    for rel, shape in [
        ("img0.tif", (96, 128)),
        ("img2.tif", (96, 128)),
        ("day2/img10.tif", (64, 80)),
    ]:
        labels = tifffile.imread(out / rel)
        assert labels.shape == shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2}
        probs = tifffile.imread(out / rel.replace(".tif", "_probabilities.tif"))
        assert probs.shape == (2, *shape) and probs.dtype == np.float32
        fused = np.where(probs.max(0) > 0.5, probs.argmax(0) + 1, 0)
        assert np.array_equal(fused, labels)
    rows = _csv(out / "scores.csv")  # in processing order: natural sort of the paths
    assert [Path(r["target"]).name for r in rows] == [
        "img10.png",
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    assert all(r["status"] == "ok" and 0 <= float(r["score_1"]) <= 1 for r in rows)
    labels = tifffile.imread(out / "img1.tif")
    assert int(rows[2]["area_2"]) == int((labels == 2).sum())
    assert not list(out.rglob(f"*{PARTIAL}"))


def test_tiff_stack_gives_a_label_stack(weights, dataset):
    stack = np.stack([make_image(30 + i, rgb=False) for i in range(4)])
    tifffile.imwrite(dataset / "movie.tif", stack, photometric="minisblack")
    args = _args(weights, dataset, "--mode", "sequential")
    args[1] = str(dataset / "movie.tif")
    assert main(args) == 0
    labels = tifffile.imread(dataset / "out" / "movie.tif")
    assert labels.shape == (4, 96, 128) and labels.dtype == np.uint8
    rows = _csv(dataset / "out" / "scores.csv")
    assert [r["frame"] for r in rows] == ["0", "1", "2", "3"]


def test_unreadable_image_is_reported_not_fatal_unless_strict(weights, dataset, capsys):
    good = (dataset / "data" / "img0.png").read_bytes()
    (dataset / "data" / "img1.png").write_bytes(good[:150])  # truncated
    assert main(_args(weights, dataset)) == 1
    rows = {Path(r["target"]).name: r for r in _csv(dataset / "out" / "scores.csv")}
    assert rows["img1.png"]["status"] == "failed" and "truncated" in rows["img1.png"]["message"]
    assert rows["img2.png"]["status"] == "ok"
    assert "run the same command again" in capsys.readouterr().err
    assert main(_args(weights, dataset, "--strict", out="strict")) == 2
    assert "img1.png" in capsys.readouterr().err


_KILL_AFTER = """
import os, signal, sys
from napari_sansa.cli import main
replace, written = os.replace, []
def replace_then_die(src, dst):
    # the third output is complete in its temporary file: die before renaming it,
    # as a SIGKILL there would (the temporary stays behind)
    if str(dst).endswith(".tif") and len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
    if str(dst).endswith(".tif"):
        written.append(dst)
os.replace = replace_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_a_kill_skips_finished_images(weights, dataset):
    """The run kills itself (SIGKILL) at a known point: after its second output."""
    data = dataset / "data"
    for i in range(3, 9):
        iio.imwrite(data / f"img{i}.png", make_image(40 + i))
    out = dataset / "out"
    cmd = [sys.executable, "-c", _KILL_AFTER, *_args(weights, dataset)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    assert len(finished) == 2
    assert len(list(out.rglob(f"*{PARTIAL}"))) == 1  # the third, never renamed
    for p in finished:  # every output present is complete
        assert tifffile.imread(p).ndim == 2
    assert main(_args(weights, dataset)) == 0
    assert len(list(out.rglob("*.tif"))) == 10
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime  # finished images were not redone
    assert not list(out.rglob(f"*{PARTIAL}"))
    assert len(_csv(out / "scores.csv")) == 10


def test_writes_are_atomic_and_a_full_disk_keeps_what_was_written(
    weights, dataset, monkeypatch, capsys
):
    calls = {"n": 0}
    original = tifffile.TiffWriter.write

    def failing_write(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffWriter, "write", failing_write)
    assert main(_args(weights, dataset)) == 1
    assert "no space left" in capsys.readouterr().err.lower()
    out = dataset / "out"
    written = sorted(out.rglob("*.tif"))
    assert len(written) == 2
    for p in written:
        assert tifffile.imread(p).ndim == 2  # complete and readable
    assert not list(out.rglob(f"*{PARTIAL}"))
    monkeypatch.undo()
    assert main(_args(weights, dataset)) == 0  # and the run continues where it stopped
    assert len(list(out.rglob("*.tif"))) == 4


def test_prompt_file_with_points_boxes_and_scribbles(weights, dataset):
    spec = {
        "references": [
            {
                "image": "ref.png",
                "points": [
                    {"row": 30, "col": 50, "label": 1},
                    {"row": 5, "col": 5, "label": 1, "positive": False},
                ],
                "boxes": [{"box": [60, 10, 85, 50], "label": 2}],
                "scribbles": [{"path": [[20, 100], [40, 110]], "label": 3}],
            }
        ]
    }
    (dataset / "prompts.json").write_text(json.dumps(spec))
    args = _args(weights, dataset)
    i = args.index("--reference")
    args[i : i + 3] = ["--prompts", str(dataset / "prompts.json")]
    assert main(args) == 0
    out = dataset / "out"
    rows = _csv(out / "scores.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for r in rows:  # every class of the prompts, with its score and its true area
        labels = tifffile.imread(out / r["output"])
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        for c in (1, 2, 3):
            assert 0.0 <= float(r[f"score_{c}"]) <= 1.0
            assert int(r[f"area_{c}"]) == int((labels == c).sum())
    record = json.loads(tifffile.TiffFile(out / rows[0]["output"]).pages[0].description)
    assert record["napari_sansa"]["classes"] == [1, 2, 3]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, r: a.__setitem__(a.index("--reference") + 2, str(r / "empty.png")), "empty"),
        (lambda a, r: a.__setitem__(a.index("--reference") + 2, str(r / "small.png")), "size"),
        (lambda a, r: a.__setitem__(a.index("--out") + 1, str(r / "data" / "out")), "inside"),
        (lambda a, r: a.__setitem__(1, str(r / "nothing")), "does not exist"),
        (lambda a, r: a.__setitem__(a.index("--threshold") + 1, "2"), "threshold"),
        (lambda a, r: a.__setitem__(a.index("--input-size") + 1, "big"), "--input-size"),
    ],
)
def test_bad_input_exits_2_with_a_message(weights, dataset, capsys, change, message):
    iio.imwrite(dataset / "empty.png", np.zeros((96, 128), np.uint8))
    iio.imwrite(dataset / "small.png", np.ones((20, 20), np.uint8))
    args = _args(weights, dataset, "--threshold", "0.5", "--input-size", "640")
    change(args, dataset)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err
    assert not (dataset / "data" / "out").exists() or not list((dataset / "data" / "out").iterdir())


def test_reference_without_labels_is_a_usage_error(weights, dataset, capsys):
    args = _args(weights, dataset)
    i = args.index("--reference")
    del args[i + 2]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2


def test_unknown_model_and_corrupt_cached_checkpoint(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_SANSA_HOME", str(tmp_path / "home"))
    base = [
        "segment",
        str(dataset / "data"),
        "--reference",
        str(dataset / "ref.png"),
        str(dataset / "ref_labels.png"),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main([*base, "--model", "sansa-mega"]) == 2
    assert "unknown model" in capsys.readouterr().err
    cached = tmp_path / "home" / "weights" / "sam2_hiera_tiny.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04" + os.urandom(5000))
    assert main([*base, "--model", "sam2-tiny"]) == 2
    err = capsys.readouterr().err
    assert str(cached) in err and "napari-sansa download sam2-tiny --force" in err
    assert not (tmp_path / "o" / "img0.tif").exists()


def test_other_settings_need_overwrite_and_foreign_files_are_kept(weights, dataset, capsys):
    out = dataset / "out"
    out.mkdir()
    (out / "img0.tif").write_bytes(b"my own file")
    assert main(_args(weights, dataset)) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "img0.tif").read_bytes() == b"my own file"
    (out / "img0.tif").unlink()
    assert main(_args(weights, dataset)) == 0
    assert main(_args(weights, dataset, "--threshold", "0.7")) == 2
    assert "threshold" in capsys.readouterr().err
    before = tifffile.imread(out / "img0.tif")
    assert main(_args(weights, dataset, "--threshold", "0.99", "--overwrite")) == 0
    after = tifffile.imread(out / "img0.tif")
    assert (after > 0).sum() <= (before > 0).sum()


def test_python_api(model, dataset):
    import napari_sansa as ns
    from napari_sansa.dataset import load_reference_pair, segment_dataset

    ref = load_reference_pair(dataset / "ref.png", dataset / "ref_labels.png")
    assert isinstance(ref, ns.Reference) and ref.classes == (1, 2)
    report = segment_dataset(dataset / "data", [ref], dataset / "api", model=model, progress=False)
    assert report.ok and report.done == 4 and report.csv.is_file()
    again = segment_dataset(dataset / "data", [ref], dataset / "api", model=model, progress=False)
    assert again.done == 0 and again.skipped == 4


def test_console_script_and_models_listing():
    exe = Path(sys.executable).with_name("napari-sansa")
    out = subprocess.run([str(exe), "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name in ("sansa-universal", "sansa-generalist", "sansa-coco20i-fold0", "sam2-large"):
        assert name in out.stdout
    bad = subprocess.run([str(exe), "segment"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "usage" in bad.stderr


# -- resume, outputs and failures: what a run may and may not touch --------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_would_replace_an_input_is_refused(weights, dataset, capsys, overwrite):
    folder = dataset / "d6"
    folder.mkdir()
    tifffile.imwrite(folder / "c.tif", make_image(3))
    before = (folder / "c.tif").read_bytes()
    args = _args(weights, dataset, *(["--overwrite"] if overwrite else []), out="d6")
    args[1] = str(folder / "c.tif")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "would replace that image itself" in err and "choose another --out" in err
    assert "use --overwrite" not in err
    assert (folder / "c.tif").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["c.tif"]


def test_resume_refuses_the_labels_of_another_image_with_the_same_name(weights, dataset, capsys):
    for day, seed in (("day1", 1), ("day2", 2)):
        (dataset / day).mkdir()
        iio.imwrite(dataset / day / "img1.png", make_image(seed))
    args = _args(weights, dataset)
    args[1] = str(dataset / "day1" / "img1.png")
    assert main(args) == 0
    out = dataset / "out"
    labels = (out / "img1.tif").read_bytes()
    rows = _csv(out / "scores.csv")
    args[1] = str(dataset / "day2" / "img1.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(dataset / "day1" / "img1.png") in err and str(dataset / "day2" / "img1.png") in err
    assert "another --out" in err
    assert (out / "img1.tif").read_bytes() == labels
    assert _csv(out / "scores.csv") == rows  # still day1's row, with day1's scores
    assert main([*args, "--overwrite"]) == 0  # replacing them is asked for explicitly
    assert [Path(r["target"]).parent.name for r in _csv(out / "scores.csv")] == ["day2"]


@pytest.mark.parametrize(
    "bad",
    [["--intensity-range", "10", "5"], ["--config", "sam2_hiera_s"]],
    ids=["intensity-range", "config"],
)
def test_a_run_that_fails_before_labelling_leaves_no_manifest(weights, dataset, capsys, bad):
    out = dataset / "out"
    args = _args(weights, dataset)
    assert main([*args, *bad]) == 2
    assert not (out / ".napari-sansa" / "run.json").exists()
    capsys.readouterr()
    assert main(args) == 0  # the corrected command is not refused as "another run"
    assert len(list(out.rglob("*.tif"))) == 4


def test_a_stale_manifest_without_outputs_does_not_block_a_new_run(weights, dataset):
    out = dataset / "out"
    (out / ".napari-sansa").mkdir(parents=True)
    (out / ".napari-sansa" / "run.json").write_text('{"signature": "x", "settings": {}}')
    assert main(_args(weights, dataset)) == 0
    assert main(_args(weights, dataset, "--threshold", "0.7")) == 2  # now outputs are there


def test_probabilities_asked_on_a_resume_are_written(weights, dataset):
    out = dataset / "out"
    args = _args(weights, dataset)
    args[1] = str(dataset / "data" / "day2")
    assert main(args) == 0
    assert not list(out.rglob("*_probabilities.tif"))
    assert main([*args, "--probabilities"]) == 0
    probs = sorted(out.rglob("*_probabilities.tif"))
    assert len(probs) == 1
    for p in probs:
        labels = tifffile.imread(p.with_name(p.name.replace("_probabilities", "")))
        fused = tifffile.imread(p)
        assert np.array_equal(np.where(fused.max(0) > 0.5, fused.argmax(0) + 1, 0), labels)


def test_overwrite_without_probabilities_removes_our_old_probabilities(weights, dataset):
    out = dataset / "out"
    args = _args(weights, dataset)
    args[1] = str(dataset / "data" / "day2")
    assert main([*args, "--probabilities"]) == 0
    assert len(list(out.rglob("*_probabilities.tif"))) == 1
    (out / "mine_probabilities.tif").write_bytes(b"a file of the user")
    assert main([*args, "--threshold", "0.6", "--overwrite"]) == 0
    assert [p.name for p in out.rglob("*_probabilities.tif")] == ["mine_probabilities.tif"]
    assert (out / "mine_probabilities.tif").read_bytes() == b"a file of the user"


def test_sequential_resume_gives_the_uninterrupted_outputs(model, dataset):
    from napari_sansa.dataset import load_reference_pair, segment_dataset

    seq = dataset / "seq"
    seq.mkdir()
    for i in range(4):
        iio.imwrite(seq / f"f{i}.png", make_image(60 + i))
    ref = load_reference_pair(dataset / "ref.png", dataset / "ref_labels.png")
    run = {"model": model, "mode": "sequential", "progress": False}
    whole = segment_dataset(seq, [ref], dataset / "a", **run)
    assert whole.ok and whole.done == 4
    b = dataset / "b"
    segment_dataset(seq, [ref], b, **run)
    for i in (2, 3):  # a kill leaves the first outputs of the sequence
        (b / f"f{i}.tif").unlink()
    kept = {i: (b / f"f{i}.tif").stat().st_mtime_ns for i in range(2)}
    resumed = segment_dataset(seq, [ref], b, **run)
    assert resumed.ok and resumed.done == 2 and resumed.skipped == 2
    for i in range(4):
        assert np.array_equal(
            tifffile.imread(b / f"f{i}.tif"), tifffile.imread(dataset / "a" / f"f{i}.tif")
        )
    for i, mtime in kept.items():
        assert (b / f"f{i}.tif").stat().st_mtime_ns == mtime  # finished outputs not rewritten
    assert (b / "scores.csv").read_text() == (dataset / "a" / "scores.csv").read_text()


def _stack_with_blank_frame(dataset):
    stack = np.stack([make_image(30 + i, rgb=False) for i in range(3)])
    stack[1] = 0
    tifffile.imwrite(dataset / "movie.tif", stack, photometric="minisblack")
    return stack


def test_a_blank_frame_in_a_stack_gets_empty_labels_not_a_failure(weights, dataset, capsys):
    _stack_with_blank_frame(dataset)
    args = _args(weights, dataset, "--probabilities")
    args[1] = str(dataset / "movie.tif")
    assert main(args) == 0
    out = dataset / "out"
    labels = tifffile.imread(out / "movie.tif")
    assert labels.shape == (3, 96, 128) and not labels[1].any()
    assert not tifffile.imread(out / "movie_probabilities.tif")[1].any()
    rows = _csv(out / "scores.csv")
    assert [(r["frame"], r["status"]) for r in rows] == [("0", "ok"), ("1", "blank"), ("2", "ok")]
    assert rows[1]["message"].startswith("frame 1 is constant") and rows[1]["area_1"] == "0"
    assert "constant frame" in capsys.readouterr().err
    assert main(args) == 0 and _csv(out / "scores.csv") == rows  # done, rebuilt the same
    assert main([*args, "--strict"]) == 0  # finished: nothing to redo
    args[args.index("--out") + 1] = str(dataset / "strict")
    assert main([*args, "--strict"]) == 2
    assert "frame 1 is constant" in capsys.readouterr().err
    rows = _csv(dataset / "strict" / "scores.csv")
    assert [(Path(r["target"]).name, r["status"]) for r in rows] == [("movie.tif", "failed")]


def test_a_bad_frame_message_names_the_frame(weights, dataset):
    stack = np.stack([make_image(30 + i, rgb=False) for i in range(3)]).astype(np.float32)
    stack[2, 5, 5] = np.nan
    tifffile.imwrite(dataset / "movie.tif", stack, photometric="minisblack")
    args = _args(weights, dataset)
    args[1] = str(dataset / "movie.tif")
    assert main(args) == 1
    (row,) = _csv(dataset / "out" / "scores.csv")
    assert row["status"] == "failed" and row["message"].startswith("frame 2 of ")


def test_strict_lists_the_failing_image_in_the_csv(weights, dataset):
    good = (dataset / "data" / "img0.png").read_bytes()
    (dataset / "data" / "img1.png").write_bytes(good[:150])
    assert main(_args(weights, dataset, "--strict")) == 2
    rows = {Path(r["target"]).name: r for r in _csv(dataset / "out" / "scores.csv")}
    assert rows["img1.png"]["status"] == "failed" and "truncated" in rows["img1.png"]["message"]


@pytest.mark.parametrize("name", ["scores.csv", "run.json"])
def test_a_full_disk_on_the_csv_or_manifest_is_a_clear_message(
    weights, dataset, monkeypatch, capsys, name
):
    import napari_sansa.core.atomic as atomic

    replace = os.replace

    def full(src, dst):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    args = _args(weights, dataset)
    args[1] = str(dataset / "data" / "day2")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on the device while writing" in err and name in err
    assert "Traceback" not in err
    out = dataset / "out"
    assert not list(out.rglob(f"*{PARTIAL}"))
    for p in out.rglob("*.tif"):
        assert tifffile.imread(p).ndim == 2  # what was written is complete
    monkeypatch.undo()
    assert main(args) == 0
    assert len(_csv(out / "scores.csv")) == 1


def test_csv_lists_frames_in_numeric_order(tmp_path):
    from napari_sansa.dataset import Target
    from napari_sansa.dataset.manifest import write_csv
    from napari_sansa.dataset.rows import score_row

    t = Target("/data/movie.tif", "movie.tif", "stack", 12)
    rows = [score_row(t, "ok", frame=i, scores={1: 0.5}) for i in (10, 2, 11, 0, 1)]
    write_csv(tmp_path, rows)
    assert [r["frame"] for r in _csv(tmp_path / "scores.csv")] == ["0", "1", "2", "10", "11"]


def test_a_rerun_with_nothing_left_loads_no_model(weights, dataset, monkeypatch):
    import napari_sansa.dataset.models as models

    assert main(_args(weights, dataset)) == 0
    csv_before = (dataset / "out" / "scores.csv").read_text()

    def no_model(source):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "cached_model", no_model)
    assert main(_args(weights, dataset)) == 0
    assert (dataset / "out" / "scores.csv").read_text() == csv_before


def test_a_probabilities_name_clashes_only_when_probabilities_are_written(tmp_path):
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.dataset import discover_targets

    data = tmp_path / "data"
    data.mkdir()
    iio.imwrite(data / "x.png", make_image(1))
    iio.imwrite(data / "x_probabilities.png", make_image(2))
    found = discover_targets(data, tmp_path / "out", probabilities=False)
    assert sorted(t.output for t in found) == ["x.tif", "x_probabilities.tif"]
    with pytest.raises(InvalidInputError, match="would both be written"):
        discover_targets(data, tmp_path / "out", probabilities=True)
