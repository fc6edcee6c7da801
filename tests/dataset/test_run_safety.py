"""Bad input, damaged files and concurrent runs (issue 10): no loss, no crash, the truth in
scores.csv. Each test failed before its fix.

The suite may run as root, for whom permission bits do not stop a read or a write: such
failures are provoked by monkeypatching in-process (each test says how), or with paths
that no user can write (a path under a regular file, ``/dev/full``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import (
    make_read_only,
    read_csv,
    segment_args,
    write_reference,
    write_targets,
)

from conftest import make_image
from napari_sansa.cli import main
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset import load_prompt_file, load_reference_pair


@pytest.fixture()
def root(tmp_path):
    write_targets(tmp_path / "data", 3)
    write_reference(tmp_path)
    return tmp_path


_args = segment_args
_csv = read_csv


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if the run loads a model."""
    import napari_sansa.dataset.models as models

    def refuse(source):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "cached_model", refuse)


# -- data lost ---------------------------------------------------------------------------------
def test_a_reference_file_in_out_is_never_replaced_even_with_overwrite(weights, root, capsys):
    out = root / "out"
    assert main(_args(weights, root)) == 0
    fixed = tifffile.imread(out / "img1.tif")
    fixed[:10] = 1  # the person corrects the labels by hand and saves them
    tifffile.imwrite(out / "img1.tif", fixed)
    before = (out / "img1.tif").read_bytes()
    args = _args(weights, root, "-r", str(root / "data" / "img1.png"), str(out / "img1.tif"))
    assert main(args) == 2  # other references: refused without --overwrite (as before)
    assert "different references" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert (out / "img1.tif").read_bytes() == before
    rows = {Path(r["target"]).name: r for r in _csv(out / "scores.csv")}
    assert (
        rows["img1.png"]["status"] == "reference"
        and "never replaced" in rows["img1.png"]["message"]
    )
    assert rows["img0.png"]["status"] == rows["img2.png"]["status"] == "ok"
    assert len(rows) == 3


@pytest.mark.parametrize("edited", [False, True], ids=["foreign", "edited"])
def test_a_users_scores_csv_is_never_replaced(weights, root, capsys, edited, no_model):
    out = root / "out"
    out.mkdir()
    if edited:  # napari-sansa's header, but not the content it recorded writing: edited
        (out / "scores.csv").write_text("target,frame,output,status,message\nmy,,,ok,note\n")
        (out / ".napari-sansa").mkdir()
        (out / ".napari-sansa" / "scores.json").write_text(json.dumps({"sha256": ["0" * 64]}))
    else:
        (out / "scores.csv").write_text("sample,weight\nA,3\n")
    before = (out / "scores.csv").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(_args(weights, root, *extra)) == 2
        err = capsys.readouterr().err
        assert "scores.csv was not written by napari-sansa" in err and "never replaced" in err
        assert (out / "scores.csv").read_bytes() == before
    assert not list(out.rglob("*.tif")) and not (out / ".napari-sansa" / "run.json").exists()


def test_a_second_run_into_the_same_out_stops_with_exit_2(weights, root, capsys, no_model):
    """Run A holds the folder's lock while B starts (A is this process: the lock is an
    OS file lock, so a second open of it conflicts as another process would)."""
    from napari_sansa.dataset.locking import OutputLock

    out = root / "out"
    out.mkdir()
    # A is writing it (a temporary of this version: a clean-up by B would remove it)
    theirs = out / ".napari-sansa-tmp.img0.tif.0123456789abcdef0123456789abcdef.partial"
    theirs.write_bytes(b"A's half-written labels")
    with OutputLock(out):
        assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert "another napari-sansa run is writing into" in err and f"process {os.getpid()}" in err
    assert theirs.read_bytes() == b"A's half-written labels"
    assert not (out / "scores.csv").exists() and not (out / ".napari-sansa" / "run.json").exists()


def test_the_held_lock_message_says_what_is_true(weights, root, capsys, no_model):
    """Issue 18 review: the message of a held lock said "If no such run is going on, the
    lock ... is not held", while it is held (that is why the run stopped). It says that
    the lock is held, by whom, how to find the process and that its end releases it."""
    from napari_sansa.dataset.locking import OutputLock

    out = root / "out"
    with OutputLock(out) as held:
        assert main(_args(weights, root)) == 2
        lock = held.path
    err = " ".join(capsys.readouterr().err.split())
    assert "is not held" not in err, err
    assert f"process {os.getpid()} on" in err and f"its lock {lock} is held" in err, err
    assert f"fuser {lock}" in err and "released when that process ends" in err, err


def test_a_stale_lock_of_a_dead_run_is_taken_over(weights, root):
    out = root / "out"
    (out / ".napari-sansa").mkdir(parents=True)
    lock = out / ".napari-sansa" / "lock"
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone", "started": 0}))
    assert main(_args(weights, root)) == 0
    assert len(list(out.glob("*.tif"))) == 3
    assert not lock.exists()  # released at the end


@pytest.mark.parametrize(
    "record",
    [
        {"pid": 4242, "host": "node7", "started": 1e30},  # gave OverflowError (exit 1)
        {"pid": 4242, "host": "node7", "started": -1e300},
        {"pid": -5, "host": "node7", "started": 0},
        {"pid": 4242, "host": ["node7"], "started": 0},
        [1, 2, 3],
        "not json at all {",
    ],
    ids=["future", "past", "pid", "host", "list", "garbage"],
)
def test_a_held_lock_with_an_unreadable_record_is_a_message(
    weights, root, capsys, no_model, record
):
    """Issue 18: a held lock whose record says ``"started": 1e30`` stopped the run with a
    traceback. The lock is held by this process (an OS file lock on another open file
    description conflicts as another process's would), with the record written into it."""
    import fcntl

    out = root / "out"
    (out / ".napari-sansa").mkdir(parents=True)
    lock = out / ".napari-sansa" / "lock"
    text = record if isinstance(record, str) else json.dumps(record)
    lock.write_text(text)
    with open(lock, "rb+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "OverflowError" not in err
    assert f"{out} is locked by a run that cannot be identified" in err
    assert str(lock) in err and "choose another --out" in err
    assert lock.read_text() == text  # nothing written into it


def _linked(path: Path, to: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(to)


def test_nothing_is_written_or_read_through_a_link_in_napari_sansa(weights, root, capsys):
    """Issue 18: with ``OUT/.napari-sansa/lock`` a link to a user's file, ``segment`` wrote
    its JSON into that file (exit 0). Every file napari-sansa keeps there is refused as a
    link (exit 2, the message names it); the link and the user's file stay as they are."""
    out = root / "out"
    assert main(_args(weights, root)) == 0
    capsys.readouterr()
    own = out / ".napari-sansa"
    mine = root / "mine.json"
    for name in ("lock", "run.json", "scores.json", "objects.json"):
        saved = (own / name).read_bytes() if (own / name).is_file() else None
        mine.write_text('{"signature": "my own notes"}')
        _linked(own / name, mine)
        assert main(_args(weights, root, "--overwrite")) == 2, name
        err = capsys.readouterr().err
        assert f"{own / name} is a link" in err and "Traceback" not in err, err
        assert (own / name).is_symlink() and mine.read_text() == '{"signature": "my own notes"}'
        (own / name).unlink()
        if saved is not None:
            (own / name).write_bytes(saved)
    assert main(_args(weights, root)) == 0  # the folder itself was not changed


def test_a_lock_that_is_a_hard_link_is_refused(weights, root, capsys, no_model):
    """Issue 18 review: with ``OUT/.napari-sansa/lock`` a hard link to a user's file
    (``ln mine.txt out/.napari-sansa/lock``), ``segment`` wrote its JSON into that file
    (exit 0): the lock is written in place, and ``O_NOFOLLOW`` refuses symlinks only."""
    out = root / "out"
    own = out / ".napari-sansa"
    own.mkdir(parents=True)
    mine = root / "mine.txt"
    mine.write_text("my notes")
    os.link(mine, own / "lock")
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert f"{own / 'lock'} is a hard link" in err and "Remove it" in err, err
    assert "Traceback" not in err
    assert mine.read_text() == "my notes" and os.stat(mine).st_nlink == 2  # left as it was
    assert not list(out.glob("*.tif")) and not (own / "run.json").exists()


@pytest.mark.parametrize("name", ["lock", "run.json"])
def test_a_lock_that_is_a_folder_is_named(weights, root, capsys, no_model, name):
    """Issue 18 review: a folder at ``OUT/.napari-sansa/lock`` was reported as "cannot
    write into the output folder (Is a directory): choose an --out you can write to"
    (and one at ``run.json`` as "a link or not a file")."""
    out = root / "out"
    lock = out / ".napari-sansa" / name
    lock.mkdir(parents=True)
    (lock / "notes.txt").write_text("mine")
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert f"{lock} is a folder" in err and "should not be there" in err, err
    assert "remove it" in err and "cannot write into the output folder" not in err
    assert (lock / "notes.txt").read_text() == "mine"


def test_a_stack_scratch_file_that_is_a_hard_link_is_refused(weights, root, capsys, no_model):
    """A stack's scratch arrays are opened in place (``open_memmap(mode="w+")`` truncates
    and writes the file): one that is a hard link to a user's file is refused too."""
    out = root / "out"
    scratch = out / ".napari-sansa" / ("cd" * 20)
    scratch.mkdir(parents=True)
    mine = root / "mine.npy"
    mine.write_bytes(b"my array")
    os.link(mine, scratch / "l.npy")
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert f"{scratch / 'l.npy'} is a hard link" in err and "Traceback" not in err, err
    assert mine.read_bytes() == b"my array"


def test_records_replaced_by_a_rename_leave_a_hard_linked_copy_alone(weights, root, capsys):
    """``run.json``, ``scores.json`` (and ``objects.json``) are written to a temporary and
    renamed over the old name: a user's hard link to them (a backup made with ``ln``)
    keeps the old bytes, so they need no refusal."""
    out = root / "out"
    assert main(_args(weights, root)) == 0
    own = out / ".napari-sansa"
    kept = {}
    for name in ("run.json", "scores.json"):
        os.link(own / name, root / f"backup-{name}")
        kept[name] = (own / name).read_bytes()
    assert main(_args(weights, root, "--overwrite")) == 0
    for name in kept:
        assert (root / f"backup-{name}").read_bytes() == kept[name]
        assert os.stat(own / name).st_nlink == 1  # a new file took the name: written anew


def test_a_napari_sansa_folder_that_is_a_link_is_refused(weights, root, capsys, no_model):
    out = root / "out"
    out.mkdir()
    theirs = root / "theirs"
    theirs.mkdir()
    (theirs / "run.json").write_text("my run")
    (out / ".napari-sansa").symlink_to(theirs)
    assert main(_args(weights, root, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert f"{out / '.napari-sansa'} is a link or not a folder" in err
    assert sorted(p.name for p in theirs.iterdir()) == ["run.json"]
    assert (theirs / "run.json").read_text() == "my run"
    assert not list(out.glob("*.tif"))


@pytest.mark.parametrize("linked", ["folder", "file"])
def test_a_stack_scratch_that_is_a_link_is_refused(weights, root, capsys, no_model, linked):
    """A stack's scratch folder in .napari-sansa/ (or a file in it) that is a link: the
    clean-up of a killed stack's scratch removed the ``.npy`` files of the folder it
    points to."""
    out = root / "out"
    scratch = out / ".napari-sansa" / ("cd" * 20)
    theirs = root / "theirs"
    theirs.mkdir()
    (theirs / "l.npy").write_bytes(b"my array")
    if linked == "folder":
        scratch.parent.mkdir(parents=True)
        scratch.symlink_to(theirs)
    else:
        scratch.mkdir(parents=True)
        (scratch / "l.npy").symlink_to(theirs / "l.npy")
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert "is a link or not a" in err and str(scratch) in err
    assert (theirs / "l.npy").read_bytes() == b"my array"


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"signature": 3}', "\xff\xfe"])
def test_a_damaged_run_json_is_called_unreadable(weights, root, capsys, damage):
    """Issue 18: a corrupt run.json was reported as "the results of another run (different
    input_size, mode, model, ...)" (a JSON list: AttributeError, exit 1)."""
    out = root / "out"
    assert main(_args(weights, root)) == 0
    run_file = out / ".napari-sansa" / "run.json"
    run_file.write_bytes(damage.encode("latin-1"))
    capsys.readouterr()
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert f"{run_file}, the record of the settings" in err and "cannot be read" in err, err
    assert "--overwrite" in err and "another --out" in err
    assert "another run" not in err and "Traceback" not in err
    assert run_file.read_bytes() == damage.encode("latin-1")
    assert main(_args(weights, root, "--overwrite")) == 0  # what the message says fixes it
    assert json.loads(run_file.read_text())["signature"]


# -- silent wrong results -------------------------------------------------------------------
def test_an_unreadable_subfolder_is_listed_as_failed(weights, root, monkeypatch):
    """The folder's refusal is provoked in-process: os.scandir raises PermissionError."""
    sub = root / "data" / "private"
    sub.mkdir()
    iio.imwrite(sub / "img9.png", make_image(9))
    scandir = os.scandir

    def refuse(path="."):
        if Path(path) == sub:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    assert main(_args(weights, root)) == 1
    rows = {Path(r["target"]).name: r for r in _csv(root / "out" / "scores.csv")}
    assert rows["private"]["status"] == "failed" and "cannot be read" in rows["private"]["message"]
    assert [rows[f"img{i}.png"]["status"] for i in range(3)] == ["ok"] * 3


@pytest.fixture()
def pipe(root):
    """A named pipe ``root/data/blocked.png``; a reader it would block is let go at the end
    (a writer opens and closes it), so that a failing test ends instead of hanging."""
    import contextlib
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes are POSIX")
    path = root / "data" / "blocked.png"
    os.mkfifo(path)
    done = threading.Event()

    def release():
        while not done.wait(0.2):
            with contextlib.suppress(OSError):  # succeeds only while a reader has it open
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Timer(15, release)
    thread.start()
    yield path
    done.set()
    thread.cancel()
    thread.join()


def test_a_pipe_given_as_target_is_refused_before_the_model_loads(
    weights, root, pipe, no_model, capsys
):
    assert main(_args(weights, root, target=pipe)) == 2
    err = capsys.readouterr().err
    assert "blocked.png is a named pipe (FIFO), not a regular file" in err, err
    assert "Traceback" not in err and not (root / "out").exists()


def test_a_pipe_in_a_target_folder_is_listed_as_failed(weights, root, pipe):
    assert main(_args(weights, root)) == 1
    rows = {Path(r["target"]).name: r for r in _csv(root / "out" / "scores.csv")}
    assert rows["blocked.png"]["status"] == "failed"
    assert "is a named pipe (FIFO), not a regular file" in rows["blocked.png"]["message"]
    assert [rows[f"img{i}.png"]["status"] for i in range(3)] == ["ok"] * 3


@pytest.mark.skipif(
    os.name == "nt" or os.fsencode("x\udcff") != b"x\xff",
    reason="file names of bytes that are not UTF-8: POSIX with UTF-8 file names",
)
def test_a_file_name_that_is_not_utf8_is_labelled_listed_and_resumed(weights, root):
    """``x\\xff.png`` (bytes, e.g. Latin-1 from an old system): labelled, written into
    scores.csv as its bytes, and a rerun finds it done (not redone, one row)."""
    data, out = root / "data", root / "out"
    name = os.fsdecode(b"x\xff.png")
    iio.imwrite(data / name, make_image(7))
    assert main(_args(weights, root)) == 0
    target = os.fsdecode(b"x\xff.tif")
    assert (out / target).exists()
    raw = (out / "scores.csv").read_bytes()
    assert b"x\xff.png" in raw
    rows = _csv_bytes(raw)
    assert [r["status"] for r in rows if r["target"].endswith(name)] == ["ok"]
    mtime = (out / target).stat().st_mtime_ns
    assert main(_args(weights, root)) == 0  # resumed: nothing redone, the rows kept
    assert (out / target).stat().st_mtime_ns == mtime
    again = _csv_bytes((out / "scores.csv").read_bytes())
    assert again == rows


def _csv_bytes(raw: bytes) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(raw.decode("utf-8", "surrogateescape"))))


@pytest.mark.parametrize("same_size_and_time", [False, True], ids=["png", "same-size-tiff"])
def test_resume_redoes_an_input_whose_content_changed(weights, root, same_size_and_time):
    data, out = root / "data", root / "out"
    if same_size_and_time:  # uncompressed TIFFs of one shape: same size; mtime put back
        for p in data.glob("*.png"):
            p.unlink()
        for i in range(3):
            tifffile.imwrite(data / f"img{i}.tif", make_image(10 + i))
    assert main(_args(weights, root)) == 0
    outputs = sorted(out.glob("*.tif"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in outputs}
    name = "img1.tif" if same_size_and_time else "img1.png"
    st = (data / name).stat()
    if same_size_and_time:
        tifffile.imwrite(data / name, make_image(99))
        assert (data / name).stat().st_size == st.st_size
    else:
        iio.imwrite(data / name, make_image(99))
    os.utime(data / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(_args(weights, root)) == 0
    record = json.loads(tifffile.TiffFile(out / "img1.tif").pages[0].description)["napari_sansa"]
    assert record["input"]["sha256"] == hashlib.sha256((data / name).read_bytes()).hexdigest()
    assert (out / "img1.tif").stat().st_mtime_ns != mtimes["img1.tif"]
    for other in ("img0.tif", "img2.tif"):  # unchanged inputs: not redone
        assert (out / other).stat().st_mtime_ns == mtimes[other]


def test_overwrite_with_an_input_now_unreadable_gives_one_row(weights, root):
    out = root / "out"
    assert main(_args(weights, root)) == 0
    good = (root / "data" / "img1.png").read_bytes()
    (root / "data" / "img1.png").write_bytes(good[:150])
    assert main(_args(weights, root, "--overwrite")) == 1
    rows = [r for r in _csv(out / "scores.csv") if r["target"].endswith("img1.png")]
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["output"] == ""
    assert len(_csv(out / "scores.csv")) == 3


def test_a_run_with_other_targets_keeps_the_earlier_rows(weights, root):
    out, data = root / "out", root / "data"
    assert main(_args(weights, root, target=data / "img0.png")) == 0
    (first,) = _csv(out / "scores.csv")
    assert main(_args(weights, root, target=data / "img1.png")) == 0
    rows = _csv(out / "scores.csv")
    assert [Path(r["target"]).name for r in rows] == ["img0.png", "img1.png"]
    assert rows[0] == first  # the first run's row as it was, scores and areas included


# -- crashes instead of clear errors -------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "under-file", "dev-full"])
def test_an_out_that_cannot_be_a_folder_is_refused_before_the_model_loads(
    weights, root, capsys, where, no_model
):
    (root / "afile").write_text("x")
    out = {"file": root / "afile", "under-file": root / "afile" / "sub", "dev-full": "/dev/full"}
    if where == "dev-full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    assert main(_args(weights, root, out=out[where])) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("is a file, not a folder" if where != "under-file" else "cannot be made") in err


def test_an_out_that_cannot_be_written_is_refused_before_the_model_loads(
    weights, root, capsys, monkeypatch, no_model
):
    """A read-only --out, provoked in-process: creating anything in it raises EACCES
    (os.mkdir and os.open for paths inside it)."""
    out = root / "out"
    out.mkdir()
    make_read_only(monkeypatch, out)
    assert main(_args(weights, root)) == 2
    err = capsys.readouterr().err
    assert f"cannot write into the output folder {out} (Permission denied)" in err
    assert "Traceback" not in err


def test_a_prompt_file_nested_100000_deep_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"references": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        load_prompt_file(path)


# napari-sansa's own records in an output folder, damaged: unreadable, never a traceback
DAMAGED_RECORDS = {
    "not UTF-8": b"\xff\xfe{}",
    "a list": b"[1, 2]",
    "settings not an object": b'{"signature": "x", "settings": 3, "sha256": 7}',
    "nested 100000 deep": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("how", list(DAMAGED_RECORDS))
def test_damaged_run_records_read_as_absent(tmp_path, how):
    from napari_sansa.dataset.manifest import (
        CSV_DIGESTS,
        RUN_FILE,
        _digests,
        check_run_file,
        recorded_with,
    )

    out = tmp_path / "out"
    (out / ".napari-sansa").mkdir(parents=True)
    tifffile.imwrite(out / "a.tif", np.zeros((4, 4), np.uint8))  # an output of some run
    (out / RUN_FILE).write_bytes(DAMAGED_RECORDS[how])
    (out / CSV_DIGESTS).write_bytes(DAMAGED_RECORDS[how])
    assert recorded_with(out, {"a": 1}) is False
    assert _digests(out) == []
    with pytest.raises(InvalidInputError, match="cannot be read"):
        check_run_file(out, "sig", {"a": 1}, [], overwrite=False)


@pytest.mark.parametrize(
    "text",
    [
        '{"pid": 1, "host": "h", "started": 1e300}',  # a time no clock shows
        "[" * 100000 + "]" * 100000,
        "[" * 2000 + "]" * 2000,  # deep enough for the parser's recursion within 4096 bytes
    ],
)
def test_a_damaged_lock_record_is_not_taken_for_a_holder(tmp_path, text):
    from napari_sansa.dataset.locking import _holder

    lock = tmp_path / "lock"
    lock.write_text(text)
    fd = os.open(lock, os.O_RDONLY)
    try:
        assert _holder(fd) is None  # said as "a run that cannot be identified"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "option, value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--chunk-size", "0")]
)
def test_bad_counts_are_refused_before_anything_is_loaded_or_written(
    weights, root, capsys, option, value, no_model
):
    assert main(_args(weights, root, option, value)) == 2
    err = capsys.readouterr().err
    assert f"{option} must be a whole number >= 1" in err
    assert not (root / "out").exists()  # no run.json, no scores.csv, no folder


def test_a_noisy_image_is_refused_as_label_image_unless_asked(weights, root, capsys, caplog):
    rng = np.random.default_rng(1)
    iio.imwrite(root / "small.png", make_image(3, shape=(40, 40)))
    noisy = rng.integers(0, 65535, (40, 40), dtype=np.uint16)  # ~1580 values on 1600 px
    iio.imwrite(root / "noisy.png", noisy)
    with pytest.raises(InvalidInputError) as info:
        load_reference_pair(root / "small.png", root / "noisy.png")
    assert "not a label image" in str(info.value) and "--allow-many-classes" in str(info.value)
    ref = load_reference_pair(root / "small.png", root / "noisy.png", allow_many_classes=True)
    assert len(ref.classes) == len(np.unique(noisy[noisy > 0]))
    # many classes that are classes: a warning, and the reference is loaded
    blocks = np.kron(np.arange(1, 151).reshape(10, 15), np.ones((8, 8), int)).astype(np.uint16)
    iio.imwrite(root / "img150.png", make_image(4, shape=blocks.shape))
    iio.imwrite(root / "lab150.png", blocks)
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_sansa"):
        assert len(load_reference_pair(root / "img150.png", root / "lab150.png").classes) == 150
    assert "150 classes (more than 100)" in caplog.text
    args = _args(weights, root, target=root / "small.png")
    args[args.index("-r") + 1 : args.index("-r") + 3] = [
        str(root / "small.png"),
        str(root / "noisy.png"),
    ]
    assert main(args) == 2
    assert "not a label image" in capsys.readouterr().err
