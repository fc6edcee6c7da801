"""A folder on disk labelled from the widget, on a real viewer (Xvfb): the same files as
``napari-sansa segment``, resumable, Stop, and the bad inputs (output = input folder,
the viewer closed or the prompt layer removed during the run, an unreadable file)."""

from __future__ import annotations

import shutil
import threading

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import cli_model_args, make_image

pytestmark = pytest.mark.gui

TIMEOUT = 240_000  # ms; a shared 2-core machine can be slow
SIZES = [(48, 64), (40, 56), (56, 72)]
ENGINE_THREADS = ("napari-sansa-dataset", "napari-sansa-write")  # a folder run's threads


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``root/data``: three images of different sizes and a 3-frame TIFF stack; the
    reference image and its labels beside it."""
    root = tmp_path_factory.mktemp("folder-run")
    data = root / "data"
    data.mkdir()
    for i, hw in enumerate(SIZES):
        iio.imwrite(data / f"photo{i}.png", make_image(30 + i, hw, rgb=False))
    stack = np.stack([make_image(40 + i, (48, 64), rgb=False) for i in range(3)])
    tifffile.imwrite(data / "stack.tif", stack, photometric="minisblack")
    iio.imwrite(root / "ref.png", make_image(7, (48, 64), rgb=False))
    lab = np.zeros((48, 64), np.uint8)
    lab[8:30, 10:40] = 1
    iio.imwrite(root / "ref_labels.png", lab)
    return root


@pytest.fixture(scope="module")
def cli_out(folder, weights):
    """What ``napari-sansa segment data -r ref.png ref_labels.png`` writes."""
    from napari_sansa.cli import main

    out = folder / "cli"
    args = ["segment", str(folder / "data"), "-r", str(folder / "ref.png")]
    args += [str(folder / "ref_labels.png"), "--out", str(out), *cli_model_args(weights)]
    assert main(args) == 0
    return out


def labels_in(out):
    return {
        p.relative_to(out).as_posix(): tifffile.imread(p)
        for p in sorted(out.rglob("*.tif"))
        if ".napari-sansa" not in p.parts
    }


def scores(out):
    import csv

    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    return sorted(
        (r["target"].rsplit("/", 1)[-1], r["frame"], r["output"], r["status"], r["score_1"])
        for r in rows
    )


def assert_same_as_cli(out, cli_out):
    got, want = labels_in(out), labels_in(cli_out)
    assert sorted(got) == sorted(want) == ["photo0.tif", "photo1.tif", "photo2.tif", "stack.tif"]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert scores(out) == scores(cli_out)


def no_leftovers(out):
    partial = [p for p in out.rglob("*") if p.name.endswith(".partial")]
    scratch = [p for p in (out / ".napari-sansa").glob("*") if p.is_dir()]
    return partial == [] and scratch == [] and not (out / ".napari-sansa" / "lock").exists()


def annotated(make_sansa, folder):
    """A viewer with the reference image and its labels as the prompt layer."""
    viewer, widget = make_sansa(
        (iio.imread(folder / "ref.png"), {"name": "ref"}, "image"),
        (iio.imread(folder / "ref_labels.png"), {"name": "ref prompts"}, "labels"),
    )
    widget.select_images(["ref"])
    widget.prompt_layers.value = [viewer.layers["ref prompts"]]
    return viewer, widget


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    return worker


def test_folder_run_writes_what_the_cli_writes_and_resumes(make_sansa, qtbot, folder, cli_out):
    viewer, widget = annotated(make_sansa, folder)
    out = folder / "gui"
    widget.select_folder(folder / "data", out)
    assert not widget.folder.input_folder.native.isHidden()
    run(qtbot, widget)
    assert widget.status.value.startswith("done: 4 image(s) labelled"), widget.status.value
    assert widget.progress.value == widget.progress.max == 6  # frames: 3 images + 3 in the stack
    assert_same_as_cli(out, cli_out)
    assert no_leftovers(out)
    results = widget.folder.run.results
    assert len(results) == 4 == widget.folder.list.count()
    assert {r.status for r in results} == {"ok"}
    # a result opened over its image: the image and its labels, as on disk
    row = [r.source.name for r in results].index("photo1.png")
    image, labels = widget.folder.open_row(row)
    assert image.name == "photo1" and image.data.shape == SIZES[1]
    np.testing.assert_array_equal(labels.data, tifffile.imread(out / "photo1.tif"))
    again, _ = widget.folder.open_row(row)
    assert again is image  # the image already shown is reused
    # Run again: everything is finished, nothing is written
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    run(qtbot, widget)
    assert widget.status.value.startswith("nothing to do: all 4 outputs"), widget.status.value
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == stamps
    assert len(widget.folder.run.results) == 4  # the finished outputs are listed again


def test_stop_then_run_again_finishes(make_sansa, qtbot, folder, cli_out):
    viewer, widget = annotated(make_sansa, folder)
    out = folder / "stopped"
    widget.select_folder(folder / "data", out)
    steps = []

    def stop_at_first(done, total):
        steps.append(done)
        if len(steps) == 1:
            widget.stop()

    widget.folder.run.progress.connect(stop_at_first)
    run(qtbot, widget)
    widget.folder.run.progress.disconnect(stop_at_first)
    assert widget.status.value.startswith("stopped:"), widget.status.value
    assert widget.folder.run.report.cancelled
    done = labels_in(out)
    assert 1 <= len(done) < 4
    assert no_leftovers(out)
    run(qtbot, widget)
    assert widget.status.value.startswith("done:"), widget.status.value
    assert f"{len(done)} finished before" in widget.status.value
    assert_same_as_cli(out, cli_out)


@pytest.mark.parametrize("where", ["same", "inside"])
def test_an_output_folder_in_the_input_folder_is_refused(make_sansa, folder, where, notifications):
    viewer, widget = annotated(make_sansa, folder)
    data = folder / "data"
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    widget.select_folder(data, data if where == "same" else data / "labels")
    assert widget.run() is None
    text = "is the input folder" if where == "same" else "is inside the input folder"
    assert text in widget.status.value and "nothing was written" in widget.status.value
    assert any(text in m for m in notifications())
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert widget.run_button.enabled and widget.worker is None


def test_missing_folder_and_missing_prompts_are_told(make_sansa, folder, tmp_path):
    viewer, widget = annotated(make_sansa, folder)
    widget.select_folder(tmp_path / "nowhere", tmp_path / "out")
    assert widget.run() is None and "does not exist" in widget.status.value
    widget.select_folder(folder / "data", None)
    assert widget.run() is None and "under 'labels to'" in widget.status.value
    widget.select_folder(folder / "data", tmp_path / "out")
    viewer.layers["ref prompts"].data[:] = 0
    assert widget.run() is None and "hold no prompts" in widget.status.value
    assert not (tmp_path / "out").exists()


def test_removing_the_prompt_layer_during_the_run_changes_nothing(
    make_sansa, qtbot, folder, cli_out
):
    viewer, widget = annotated(make_sansa, folder)
    out = folder / "removed"
    widget.select_folder(folder / "data", out)
    removed = []

    def remove(done, total):
        if not removed:
            removed.append(done)
            viewer.layers.remove("ref prompts")
            viewer.layers.remove("ref")

    widget.folder.run.progress.connect(remove)
    run(qtbot, widget)
    assert removed and widget.status.value.startswith("done: 4"), widget.status.value
    assert_same_as_cli(out, cli_out)


def hold_after_first_frame(monkeypatch):
    """Make the engine's next run wait after its first finished frame (its step is sent, so
    the widget sees it) until ``go_on`` is set: ``(waiting, go_on)``, two Events."""
    import functools

    from napari_sansa.dataset import runner

    waiting, go_on = threading.Event(), threading.Event()
    segment_dataset = runner.segment_dataset

    @functools.wraps(segment_dataset)
    def held(*args, on_progress, **options):
        def step(progress):
            on_progress(progress)
            if progress.frames and not waiting.is_set():
                waiting.set()
                go_on.wait(TIMEOUT / 1000)

        return segment_dataset(*args, on_progress=step, **options)

    monkeypatch.setattr(runner, "segment_dataset", held)
    return waiting, go_on


def test_closing_the_viewer_during_the_run_stops_it_cleanly(
    make_sansa, qtbot, folder, cli_out, monkeypatch
):
    from qtpy.QtCore import QTimer

    waiting, go_on = hold_after_first_frame(monkeypatch)
    viewer, widget = annotated(make_sansa, folder)
    out = folder / "closed"
    widget.select_folder(folder / "data", out)
    folder_run = widget.folder.run
    closed = []

    def close(done, total):
        if not closed:
            closed.append(waiting.is_set())
            QTimer.singleShot(0, viewer.close)

    folder_run.progress.connect(close)
    # the engine goes on only once Qt has deleted the closed viewer's widgets
    widget.native.destroyed.connect(lambda *_: go_on.set())
    assert widget.run() is not None
    qtbot.waitUntil(go_on.is_set, timeout=TIMEOUT)
    assert closed == [True]  # closed while the engine waited after its first frame
    qtbot.waitUntil(lambda: folder_run.worker is None, timeout=TIMEOUT)
    # the engine's thread stops by itself after the frame in progress
    engine = [t for t in threading.enumerate() if t.name.startswith(ENGINE_THREADS)]
    for thread in engine:
        thread.join(TIMEOUT / 1000)
    assert not any(thread.is_alive() for thread in engine)
    assert not folder_run.alive
    assert no_leftovers(out)  # nothing half-written, the lock released
    # stopped early: the first image and at most those already on their way to the disk
    # (napari's own quit on closing leaves the engine running: the cancel stops it)
    done = labels_in(out)
    assert 1 <= len(done) < 4 and "stack.tif" not in done, sorted(done)
    # a new viewer goes on where the closed one stopped
    viewer, widget = annotated(make_sansa, folder)
    widget.select_folder(folder / "data", out)
    run(qtbot, widget)
    assert widget.status.value.startswith("done:"), widget.status.value
    assert f"{len(done)} finished before" in widget.status.value
    assert_same_as_cli(out, cli_out)


def test_an_unreadable_file_is_listed_and_the_others_are_labelled(
    make_sansa, qtbot, folder, cli_out, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(folder / "data", data)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    viewer, widget = annotated(make_sansa, folder)
    out = tmp_path / "out"
    widget.select_folder(data, out)
    run(qtbot, widget)
    status = widget.status.value
    assert status.startswith("done: 4 image(s) labelled") and "1 not readable" in status, status
    got, want = labels_in(out), labels_in(cli_out)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    failed = [r for r in widget.folder.run.results if r.status == "failed"]
    assert [r.source.name for r in failed] == ["broken.png"] and failed[0].output is None
    assert "broken.png" in failed[0].message
    texts = [widget.folder.list.item(i).text() for i in range(widget.folder.list.count())]
    assert "broken.png: not labelled (failed)" in texts
    assert widget.folder.open_row(texts.index("broken.png: not labelled (failed)")) is None


def test_a_folder_of_another_run_is_refused_in_the_widgets_words(
    make_sansa, qtbot, folder, tmp_path
):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(folder / "data" / "photo0.png", data)
    viewer, widget = annotated(make_sansa, folder)
    out = tmp_path / "out"
    widget.select_folder(data, out)
    run(qtbot, widget)
    assert widget.status.value.startswith("done: 1 image(s)"), widget.status.value
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    widget.threshold.value = 0.7
    run(qtbot, widget)
    status = widget.status.value
    assert "holds the results of another run (different threshold)" in status, status
    assert "choose another output folder" in status and "--" not in status
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert widget.run_button.enabled


def cli_segment(folder, weights, out, data=None) -> int:
    """``napari-sansa segment`` of ``data`` (default ``folder/data``) into ``out`` with the
    widget's model (the tests' widget names its config, so the command line does too)."""
    from conftest import CONFIG
    from napari_sansa.cli import main

    args = ["segment", str(data or folder / "data"), "-r", str(folder / "ref.png")]
    args += [str(folder / "ref_labels.png"), "--out", str(out), *cli_model_args(weights)]
    return main([*args, "--config", CONFIG])


def test_the_command_line_finishes_a_folder_stopped_in_the_widget(
    make_sansa, qtbot, folder, cli_out, weights
):
    viewer, widget = annotated(make_sansa, folder)
    out = folder / "widget-then-cli"
    widget.select_folder(folder / "data", out)

    def stop_at_first(done, total):
        widget.folder.run.progress.disconnect(stop_at_first)
        widget.stop()

    widget.folder.run.progress.connect(stop_at_first)
    run(qtbot, widget)
    assert widget.status.value.startswith("stopped:"), widget.status.value
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert 1 <= len(stamps) < 4
    assert cli_segment(folder, weights, out) == 0  # not refused as another run's folder
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished ones kept
    assert_same_as_cli(out, cli_out)


def test_the_widget_goes_on_with_a_folder_of_the_command_line(
    make_sansa, qtbot, folder, weights, cli_out, tmp_path
):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("photo0.png", "photo1.png"):
        shutil.copy(folder / "data" / name, data)
    out = tmp_path / "out"
    assert cli_segment(folder, weights, out, data) == 0  # the first two, overnight
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    shutil.copy(folder / "data" / "photo2.png", data)  # then the folder grows
    viewer, widget = annotated(make_sansa, folder)
    widget.select_folder(data, out)
    run(qtbot, widget)
    status = widget.status.value
    assert status.startswith("done: 1 image(s) labelled") and "2 finished before" in status, status
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for name in ("photo0.tif", "photo1.tif", "photo2.tif"):
        np.testing.assert_array_equal(tifffile.imread(out / name), tifffile.imread(cli_out / name))


def test_a_folder_in_the_way_is_told_in_the_widgets_words(folder, tmp_path, weights, capsys):
    """The command line's message for a folder at an output's name in a new output folder
    (issue 18 review) names ``--overwrite`` and ``--out``; the widget has neither option:
    its words say to move or rename the folder, or to choose another output folder: the
    error says which option (the output folder) and each front end words it (issue 19)."""
    from conftest import CONFIG, SIZE
    from napari_sansa.core.errors import OptionError
    from napari_sansa.dataset import ModelSource, load_reference_pair, segment_dataset
    from napari_sansa.napari.messages import gui_message

    out = tmp_path / "out"
    (out / "photo0.tif").mkdir(parents=True)
    assert cli_segment(folder, weights, out) == 2
    cli = capsys.readouterr().err
    assert "(not even with --overwrite)" in cli and "choose another --out" in cli, cli
    refs = [load_reference_pair(folder / "ref.png", folder / "ref_labels.png")]
    sam2, adapters = weights
    model = ModelSource(config=CONFIG, sam2_checkpoint=str(sam2), image_size=SIZE,
                        adapter_checkpoint=str(adapters), device="cpu")  # fmt: skip
    with pytest.raises(OptionError) as info:
        segment_dataset(folder / "data", refs, out, model=model)
    assert info.value.option == "out" and str(info.value) in cli
    words, _ = gui_message(info.value)
    assert "is a folder" in words and "move or rename it" in words, words
    assert "--" not in words and "choose another output folder" in words, words


def test_the_finished_outputs_list_keeps_the_sub_folders(make_sansa, qtbot, folder, tmp_path):
    """Images of one name in two sub-folders are two lines that say which is which,
    after the run and when a second Run lists the outputs finished before."""
    data = tmp_path / "nested"
    for sub in ("day1", "day2/well A"):
        (data / sub).mkdir(parents=True)
        shutil.copy(folder / "data" / "photo0.png", data / sub / "cells.png")
    shutil.copy(folder / "data" / "photo1.png", data / "top.png")
    viewer, widget = annotated(make_sansa, folder)
    widget.select_folder(data, tmp_path / "labels")
    run(qtbot, widget)
    texts = {widget.folder.list.item(i).text() for i in range(widget.folder.list.count())}
    assert texts == {"day1/cells.png", "day2/well A/cells.png", "top.png"}
    run(qtbot, widget)  # nothing to do: the finished outputs are listed from scores.csv
    assert widget.status.value.startswith("nothing to do"), widget.status.value
    again = {widget.folder.list.item(i).text() for i in range(widget.folder.list.count())}
    assert again == texts
    image, labels = widget.folder.open_row(
        [r.text for r in widget.folder.run.results].index("day2/well A/cells.png")
    )
    assert labels.data.shape == image.data.shape
