"""``segment_dataset``'s progress and cancel, and ``segment_dataset_iter``: a run stopped
after any frame leaves only whole files, and a rerun gives the uninterrupted outputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, write_reference, write_targets

from conftest import make_image
from napari_sansa.core.errors import InvalidInputError


@pytest.fixture
def root(tmp_path):
    write_reference(tmp_path)
    data = write_targets(tmp_path / "data", 3)
    stack = np.stack([make_image(40 + i, rgb=False) for i in range(4)])
    tifffile.imwrite(data / "stack.tif", stack, photometric="minisblack")
    return tmp_path


@pytest.fixture
def ref(root):
    from napari_sansa.dataset import load_reference_pair

    return load_reference_pair(root / "ref.png", root / "ref_labels.png")


def outputs(out):
    """Every file under ``out`` (but the run's own records) -> its labels."""
    return {
        p.relative_to(out).as_posix(): tifffile.imread(p)
        for p in sorted(out.rglob("*.tif"))
        if ".napari-sansa" not in p.parts
    }


def leftovers(out):
    """Temporaries and scratch files a run must never leave."""
    found = [p for p in out.rglob("*") if p.name.endswith(".partial")]
    scratch = out / ".napari-sansa"
    found += [p for p in scratch.glob("*") if p.is_dir()] if scratch.is_dir() else []
    return found


def scores(out):
    keep = ("target", "frame", "output", "status")
    rows = read_csv(out / "scores.csv")
    return sorted(
        tuple(r[k] for k in keep) + tuple(v for k, v in sorted(r.items()) if k.startswith("score"))
        for r in rows
    )


def cancelled_run(model, root, ref, out, stop_when):
    """``segment_dataset`` of ``root/data`` cancelled once ``stop_when(steps so far)``."""
    from napari_sansa.dataset import segment_dataset

    cancel = threading.Event()
    seen = []

    def on_progress(step):
        seen.append(step)
        if stop_when(seen):
            cancel.set()

    return segment_dataset(
        root / "data", [ref], out, model=model, progress=False, on_progress=on_progress,
        cancel=cancel,
    )  # fmt: skip


def test_iter_yields_each_frame_and_returns_the_report(model, root, ref):
    from napari_sansa.dataset import DatasetProgress, segment_dataset, segment_dataset_iter

    whole = segment_dataset(root / "data", [ref], root / "whole", model=model, progress=False)
    assert whole.ok and not whole.cancelled
    steps = []
    run = segment_dataset_iter(root / "data", [ref], root / "it", model=model)
    while True:
        try:
            steps.append(next(run))
        except StopIteration as stop:
            report = stop.value
            break
    assert all(isinstance(s, DatasetProgress) for s in steps)
    assert sum(s.frames for s in steps) == 7 == steps[-1].done == steps[-1].total
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    finished = dict(o for s in steps for o in s.outputs())
    assert {p.name for p in finished.values()} == {"img0.tif", "img1.tif", "img2.tif", "stack.tif"}
    assert all(p.is_file() for p in finished.values())
    rows = [r for s in steps for r in s.rows]
    assert len(rows) == 7 and {r["status"] for r in rows} == {"ok"}
    assert report.ok and report.done == 4 and report.frames == 7 and not report.cancelled
    got, want = outputs(root / "it"), outputs(root / "whole")
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert scores(root / "it") == scores(root / "whole")
    again = list(segment_dataset_iter(root / "data", [ref], root / "it", model=model))
    assert again == []  # everything was finished: nothing to do


@pytest.mark.parametrize("after", [1, 4])  # inside the images; inside the stack (frame 1)
def test_cancel_then_resume_gives_the_uninterrupted_outputs(model, root, ref, after):
    from napari_sansa.dataset import segment_dataset

    whole = segment_dataset(root / "data", [ref], root / "whole", model=model, progress=False)
    out = root / "out"
    report = cancelled_run(model, root, ref, out, lambda seen: sum(s.frames for s in seen) >= after)
    assert report.cancelled and report.ok
    assert leftovers(out) == []
    done = outputs(out)
    assert 0 < len(done) < 4 if after == 1 else len(done) == 3
    assert "stack.tif" not in done  # a stack not finished is not written at all
    listed = {r["output"] for r in read_csv(out / "scores.csv") if r["status"] == "ok"}
    assert listed == set(done)
    resumed = segment_dataset(root / "data", [ref], out, model=model, progress=False)
    assert resumed.ok and not resumed.cancelled
    assert resumed.skipped == len(done) and resumed.done == 4 - len(done)
    got, want = outputs(out), outputs(root / "whole")
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert scores(out) == scores(root / "whole")
    assert whole.done == 4


def test_closing_the_iterator_stops_the_run_and_releases_the_folder(model, root, ref):
    from napari_sansa.dataset import segment_dataset_iter

    out = root / "out"
    run = segment_dataset_iter(root / "data", [ref], out, model=model)
    first = next(run)
    assert first.done == 1
    run.close()  # waits for the run: its lock is released, its files are whole
    assert leftovers(out) == []
    assert not (out / ".napari-sansa" / "lock").exists()
    done = outputs(out)
    assert 1 <= len(done) < 4 and "stack.tif" not in done
    rest = list(segment_dataset_iter(root / "data", [ref], out, model=model))
    assert sum(s.frames for s in rest) == 7 - rest[0].done + rest[0].frames
    assert len(outputs(out)) == 4


def test_a_cancel_set_before_the_run_writes_nothing(model, root, ref):
    from napari_sansa.dataset import segment_dataset

    cancel = threading.Event()
    cancel.set()
    report = segment_dataset(root / "data", [ref], root / "out", model=model, cancel=cancel)
    assert report.cancelled and report.done == 0
    assert outputs(root / "out") == {}


def test_bad_progress_arguments_are_refused(model, root, ref):
    from napari_sansa.dataset import segment_dataset, segment_dataset_iter

    with pytest.raises(InvalidInputError, match="on_progress"):
        segment_dataset(root / "data", [ref], root / "out", model=model, on_progress=3)
    with pytest.raises(InvalidInputError, match="cancel"):
        segment_dataset(root / "data", [ref], root / "out", model=model, cancel="yes")
    with pytest.raises(TypeError):
        segment_dataset_iter(root / "data", [ref], root / "out", model=model, colour="red")
    with pytest.raises(TypeError, match="on_progress"):
        segment_dataset_iter(root / "data", [ref], root / "out", on_progress=print)
    with pytest.raises(InvalidInputError, match="threshold"):
        next(segment_dataset_iter(root / "data", [ref], root / "out", threshold=3))
    assert not (root / "out").exists()


def test_a_cancelled_run_still_lists_the_unreadable_files_it_met(model, root, ref):

    (root / "data" / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = root / "out"
    # stopped at the second step: the broken file, then the first image written
    report = cancelled_run(model, root, ref, out, lambda seen: len(seen) == 2)
    assert report.cancelled and "stack.tif" not in outputs(out)
    failed = [r for r in read_csv(out / "scores.csv") if r["status"] == "failed"]
    assert [r["target"].rsplit("/", 1)[-1] for r in failed] == ["a_broken.png"]
    assert [t.rsplit("/", 1)[-1] for t, _ in report.failed] == ["a_broken.png"]
