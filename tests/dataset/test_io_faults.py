"""Faults of reading and writing found in review (issue 9, I/O): each test failed before its fix.

The suite may run as root, for whom permission bits do not stop a read or a write:
failures of the file system are provoked by monkeypatching in-process instead, as each
test says.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference, write_targets
from PIL import Image

from conftest import make_image
from napari_sansa.cli import main
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset import discover_targets, load_reference_pair
from napari_sansa.dataset.io import TiffStack, open_target


def _setup(root: Path):
    write_reference(root)
    return write_targets(root / "data", 2)


def _args(weights, root, *extra, target=None):
    return segment_args(weights, root, *extra, target=target)


def test_open_target_is_a_context_manager_that_closes_the_file(tmp_path):
    frames = np.stack([make_image(i, shape=(32, 40), rgb=False) for i in range(3)])
    tifffile.imwrite(tmp_path / "s.tif", frames, photometric="minisblack")
    with open_target(tmp_path / "s.tif") as (kind, stack):
        assert kind == "stack" and len(stack) == 3
        handle = stack._tif.filehandle
        assert not handle.closed
    assert handle.closed
    with TiffStack(tmp_path / "s.tif") as stack:
        handle = stack._tif.filehandle
        np.testing.assert_array_equal(stack[2], frames[2])
    assert handle.closed
    iio.imwrite(tmp_path / "one.png", frames[0])
    with open_target(tmp_path / "one.png") as (kind, path):
        assert kind == "image" and path == tmp_path / "one.png"


def test_a_series_stored_in_one_page_is_read_one_frame_at_a_time(tmp_path):
    """A volume written as one (uncompressed) page: a frame costs one frame of memory."""
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 60000, (32, 128, 128), dtype=np.uint16)  # 1 MiB
    tifffile.imwrite(tmp_path / "vol.tif", volume, volumetric=True)
    with tifffile.TiffFile(tmp_path / "vol.tif") as tif:
        assert len(tif.series[0].pages) == 1  # the layout this test is about
    frame_bytes = volume[0].nbytes
    with TiffStack(tmp_path / "vol.tif") as stack:
        assert len(stack) == 32
        tracemalloc.start()
        try:
            got = stack[7]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(got, volume[7])
        np.testing.assert_array_equal(stack[31], volume[31])
    assert peak < 4 * frame_bytes, f"reading one frame took {peak} bytes (a frame: {frame_bytes})"


def test_discovery_opens_no_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "stack.tif", np.zeros((3, 16, 16), np.uint8))
    tifffile.imwrite(data / "one.tif", np.zeros((16, 16), np.uint8))
    iio.imwrite(data / "a.png", np.zeros((16, 16), np.uint8))
    opened = []
    original = tifffile.TiffFile.__init__

    def counting(self, *a, **k):
        opened.append(a[0] if a else None)
        return original(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", counting)
    found = discover_targets(data, tmp_path / "out")
    assert sorted(t.output for t in found) == ["a.tif", "one.tif", "stack.tif"]
    assert opened == []
    assert {t.kind for t in found if t.output != "a.tif"} == {"tiff"}  # opened when processed


def test_a_run_opens_each_tiff_once_and_labels_stacks_found_then(weights, tmp_path, monkeypatch):
    data = _setup(tmp_path)
    stack = np.stack([make_image(30 + i, rgb=False) for i in range(3)])
    tifffile.imwrite(data / "movie.tif", stack, photometric="minisblack")
    tifffile.imwrite(data / "single.tif", make_image(40, rgb=False))
    opened = []
    original = tifffile.TiffFile.__init__

    def counting(self, *a, **k):
        opened.append(Path(str(a[0])))
        return original(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", counting)
    assert main(_args(weights, tmp_path)) == 0
    inputs = [p.name for p in opened if p.parent == data]
    assert sorted(inputs) == ["movie.tif", "movie.tif", "single.tif"]  # stack: found, then read
    out = tmp_path / "out"
    assert tifffile.imread(out / "movie.tif").shape == (3, 96, 128)
    rows = [r for r in read_csv(out / "scores.csv") if r["target"].endswith("movie.tif")]
    assert [r["frame"] for r in rows] == ["0", "1", "2"]


def test_cleanup_leaves_the_temporaries_of_another_output_folder_alone(weights, tmp_path):
    """A run into ``out`` while another run writes into ``out/sub`` (its own --out)."""
    _setup(tmp_path)
    sub = tmp_path / "out" / "sub"
    (sub / ".napari-sansa").mkdir(parents=True)
    theirs = sub / ".img.tif.9f2c.napari-sansa-part"  # a 0.1 run's temporary, being written
    theirs.write_bytes(b"half a stack")
    token = "0123456789abcdef0123456789abcdef"
    leftover = tmp_path / "out" / f".napari-sansa-tmp.img0.tif.{token}.partial"
    leftover.write_bytes(b"left by a killed run")
    scratch = tmp_path / "out" / ".napari-sansa" / ("ab" * 20)  # a killed stack's scratch
    scratch.mkdir(parents=True)
    (scratch / "p.npy").write_bytes(b"probabilities of half a stack")
    mine = tmp_path / "out" / "notes.partial"  # a user's file that merely ends so
    mine.write_bytes(b"my notes")
    assert main(_args(weights, tmp_path)) == 0
    assert theirs.read_bytes() == b"half a stack"
    assert mine.read_bytes() == b"my notes"
    assert not leftover.exists() and not scratch.exists()


def test_overwrite_removes_napari_sansas_temporaries_only(weights, tmp_path):
    """Issue 18: ``--overwrite`` removed a user's hidden ``.img00.tif.<32 hex>.partial``
    (the temporaries' names carried no mark of the package). Only names with the mark go,
    and 0.1's (``.napari-sansa-part``); unmarked names only inside ``.napari-sansa/``."""
    import os

    _setup(tmp_path)
    out = tmp_path / "out"
    assert main(_args(weights, tmp_path)) == 0
    token = "0123456789abcdef0123456789abcdef"
    own = out / ".napari-sansa"
    killed = [  # left by killed runs of this version, of 0.1, of versions in between
        out / f".napari-sansa-tmp.img0.tif.{token}.partial",
        out / "sub" / f".napari-sansa-tmp.img0.tif.{token}.partial",
        out / f".img0.tif.{token}.napari-sansa-part",
        out / ".scores.csv.napari-sansa-part",
        own / ".run.json.napari-sansa-part",
        own / f".run.json.{token}.partial",
        own / f".napari-sansa-tmp.scores.json.{token}.partial",
    ]
    users = [  # a user's files that merely look like temporaries
        out / f".img00.tif.{token}.partial",
        out / "sub" / f".scores.csv.{token}.partial",
        out / "sub" / ".scores.csv.napari-sansa-part",  # 0.1 wrote that in --out only
        out / f".napari-sansa-tmp.img0.tif.{token}.partial.bak",
        out / f".napari-sansa-tmp.img0.tif.{token[1:]}.partial",
        own / f"notes.{token}.partial",
    ]
    (out / "sub").mkdir()
    for p in killed + users:
        p.write_bytes(b"x")
    mine = tmp_path / "mine.txt"
    mine.write_bytes(b"mine")
    link = out / f".napari-sansa-tmp.img1.tif.{token}.partial"  # never followed
    link.symlink_to(mine)
    assert main(_args(weights, tmp_path, "--overwrite")) == 0
    assert [p.name for p in killed if p.exists()] == []
    assert [p.name for p in users if not p.exists()] == []
    assert link.is_symlink() and mine.read_bytes() == b"mine"
    assert sorted(os.listdir(out / "sub")) == sorted(
        p.name for p in users if p.parent.name == "sub"
    )


def test_a_palette_image_that_cannot_be_decoded_reports_the_real_failure(tmp_path, monkeypatch):
    """A failure to decode a palette PNG (provoked in-process: PIL's PNG loader raises
    once, as a flaky network file system might) is reported as it is, not as the
    "colour image" that a second reader, which turns palettes into RGB, would give."""
    from PIL import PngImagePlugin

    iio.imwrite(tmp_path / "ref.png", make_image(5, shape=(48, 64)))
    lab = np.zeros((48, 64), np.uint8)
    lab[5:20, 5:25] = 1
    pal = Image.fromarray(lab, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    pal.save(tmp_path / "voc.png")
    original = PngImagePlugin.PngImageFile.load
    calls = []

    def flaky(self):
        if Path(str(self.filename)).name == "voc.png" and not calls:
            calls.append(1)
            raise OSError("decoder error -3 (simulated)")
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", flaky)
    with pytest.raises(InvalidInputError) as info:
        load_reference_pair(tmp_path / "ref.png", tmp_path / "voc.png")
    text = str(info.value)
    assert "decoder error -3 (simulated)" in text and "not a readable image" in text, text
    assert "voc.png" in text and "color" not in text and "colour" not in text, text


def test_probabilities_that_cannot_be_removed_fail_the_image(weights, tmp_path, monkeypatch):
    """The failed removal is provoked in-process (Path.unlink raises for that file)."""
    _setup(tmp_path)
    one = tmp_path / "data" / "img0.png"
    assert main(_args(weights, tmp_path, "--probabilities", target=one)) == 0
    out = tmp_path / "out"
    labels, probs = (out / "img0.tif").read_bytes(), (out / "img0_probabilities.tif").read_bytes()
    original = Path.unlink

    def refuse(self, *a, **k):
        if self.name == "img0_probabilities.tif":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert main(_args(weights, tmp_path, "--threshold", "0.7", "--overwrite", target=one)) == 1
    (row,) = read_csv(out / "scores.csv")
    assert row["status"] == "failed" and "cannot be removed" in row["message"]
    assert "img0_probabilities.tif" in row["message"]
    # the old pair stays together: labels and probabilities of the same run
    assert (out / "img0.tif").read_bytes() == labels
    assert (out / "img0_probabilities.tif").read_bytes() == probs


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "resume"])
def test_a_folder_at_an_outputs_name_fails_that_target_only(weights, tmp_path, overwrite, capsys):
    """Issue 18: a folder where an output goes stopped the whole ``--overwrite`` run with a
    message naming a temporary file. That target is failed (its row names the folder), the
    others are labelled, the exit code is 1, and the folder stays as it was."""
    data = _setup(tmp_path)
    frames = np.stack([make_image(20 + i, rgb=False) for i in range(3)])
    tifffile.imwrite(data / "movie.tif", frames, photometric="minisblack")
    assert main(_args(weights, tmp_path)) == 0
    out = tmp_path / "out"
    for name in ("img0.tif", "movie.tif"):
        (out / name).unlink()
        (out / name).mkdir()
        (out / name / "mine.txt").write_text("my notes")
    extra = ["--overwrite"] if overwrite else []
    capsys.readouterr()
    assert main(_args(weights, tmp_path, *extra)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and ".partial" not in err, err
    rows = {Path(r["target"]).name: r for r in read_csv(out / "scores.csv")}
    for source, name in (("img0.png", "img0.tif"), ("movie.tif", "movie.tif")):
        assert rows[source]["status"] == "failed", rows[source]
        message = rows[source]["message"]
        assert f"{out / name} is a folder" in message and ".partial" not in message, message
        assert (out / name / "mine.txt").read_text() == "my notes"
    assert rows["img1.png"]["status"] == "ok"
    assert tifffile.imread(out / "img1.tif").shape == (96, 128)
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_a_folder_at_an_outputs_name_in_a_new_out_is_named_as_a_folder(weights, tmp_path, capsys):
    """Issue 18 review: a folder at an output's name in an ``--out`` without napari-sansa's
    records stopped the run saying "use --overwrite to replace such files", but a folder is
    never replaced (``--overwrite`` then fails that target). The message names the folder
    and says to move or rename it; a file there is still reported, after the folder."""
    _setup(tmp_path)
    out = tmp_path / "out"
    (out / "img1.tif").mkdir(parents=True)
    (out / "img1.tif" / "mine.txt").write_text("my notes")
    (out / "img0.tif").write_bytes(b"my own image")
    assert main(_args(weights, tmp_path)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{out / 'img1.tif'} is a folder" in err and "move or rename it" in err, err
    assert "--overwrite to replace" not in err and "Traceback" not in err, err
    assert (out / "img1.tif" / "mine.txt").read_text() == "my notes"
    (out / "img1.tif" / "mine.txt").rename(tmp_path / "mine.txt")
    (out / "img1.tif").rmdir()
    assert main(_args(weights, tmp_path)) == 2  # the file is the next thing in the way
    err = " ".join(capsys.readouterr().err.split())
    assert f"{out / 'img0.tif'} already exists" in err and "use --overwrite" in err, err
    assert (out / "img0.tif").read_bytes() == b"my own image"
