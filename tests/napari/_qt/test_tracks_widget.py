"""Tracks in the widget (issue 22): the 'tracks' box, a run that ends in track layers,
corrections from the dock, the counts, saving; on a real viewer with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sansa.core.tracks import track_objects
from napari_sansa.napari.tracks_output import track_labels_name, tracks_name

pytestmark = pytest.mark.gui

T, H, W = 5, 48, 64
TIMEOUT = 180_000


def disks(t):
    rr, cc = np.indices((H, W))
    a = (rr - 14) ** 2 + (cc - (10 + 5 * t)) ** 2 <= 36
    b = (rr - (12 + 4 * t)) ** 2 + (cc - 48) ** 2 <= 30
    return a, b


def time_lapse():
    """Two bright disks moving over a dark textured background, and frame 0 painted."""
    rng = np.random.default_rng(3)
    frames = (rng.random((T, H, W)) * 60).astype(np.uint8)
    paint = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        a, b = disks(t)
        frames[t][a | b] = 220
    a, b = disks(0)
    paint[0][a | b] = 1
    return frames, paint


def open_time_lapse(make_sansa, **image_kwargs):
    frames, paint = time_lapse()
    viewer, widget = make_sansa(
        (frames, {"name": "cells", **image_kwargs}, "image"),
        (paint, {"name": "paint"}, "labels"),
    )
    return viewer, widget


def linked_time_lapse(make_sansa, classes: bool = False):
    """The time-lapse in the widget with its two disks linked into tracks (no run)."""
    from napari_sansa.napari.tracks_output import TrackSettings, TracksOutput, link_tracks

    viewer, widget = open_time_lapse(make_sansa)
    objects = np.zeros((T, H, W), np.uint16)
    for t in range(T):
        a, b = disks(t)
        objects[t][a], objects[t][b] = 1 + t, 10 + t
    session = widget.session
    session.tracks = TracksOutput(viewer, viewer.layers["cells"], TrackSettings())
    class_map = (objects > 0).astype(np.uint8) if classes else None
    session._on_linked(link_tracks(objects, class_map, TrackSettings()))
    return viewer, widget


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


def test_a_run_with_tracks_makes_the_track_layers_and_the_panel(make_sansa, qtbot, tmp_path):
    viewer, widget = open_time_lapse(make_sansa)
    assert widget.large.tracks.enabled
    assert widget.page_buttons["Tracks"].isHidden()  # before a run with tracks
    widget.large.tracks.value = True
    assert widget.large.instances.value  # tracks imply objects
    run(qtbot, widget)
    assert widget.status.value.startswith("done: 5 frames, "), widget.status.value
    objects = viewer.layers["cells [sansa objects]"]
    output = viewer.layers["cells [sansa]"]
    labels = viewer.layers[track_labels_name("cells")]
    lines = viewer.layers[tracks_name("cells")]
    # the core's tracks of the run's objects and classes
    want, table = track_objects(np.asarray(objects.data), classes=np.asarray(output.data))
    assert set(objects.features["class"]) == {1}
    np.testing.assert_array_equal(labels.data, want)
    assert lines.data.shape == (len(table), 4)
    ids = np.unique(table["track"]).tolist()
    assert widget.tracks_panel.table.tracks() == ids
    assert not widget.page_buttons["Tracks"].isHidden()  # the Tracks page, shown
    assert widget.page_stack.currentWidget() is widget.pages["Tracks"]
    # counts per frame: objects per class, and tracks
    per_frame = widget.object_counts.tracks()
    assert sorted(per_frame) == list(range(T))
    for t in range(T):
        assert per_frame[t]["tracks"] == int(np.sum(table["t"] == t))
        assert widget.plot.counts()[t] == per_frame[t]["tracks"]
    # a click on the track labels (pan/zoom mode) selects the track under it
    track = int(labels.data[0][np.nonzero(labels.data[0])][0])
    where = np.argwhere(labels.data[0] == track)[0]
    widget.session._on_track_click(labels, type("Event", (), {"position": (0, *where)})())
    assert widget.tracks_panel.table.selected_tracks() == [track]
    assert widget.status.value.startswith(f"track {track}: frames 0-")
    # split the selected track at frame 2 (the frame shown), then undo
    before = np.array(labels.data)
    widget.go_to_frame(2)
    # (frame 0's references are followed through the frames: the track goes on)
    assert table["t"][table["track"] == track].max() >= 2
    assert widget.tracks_panel.split()
    new = max(ids) + 1
    assert new in widget.tracks_panel.table.tracks()
    assert (labels.data[2:] == new).sum() == (before[2:] == track).sum() > 0
    assert not (labels.data[2:] == track).any()
    assert widget.tracks_panel.undo()
    np.testing.assert_array_equal(labels.data, before)
    assert widget.tracks_panel.table.tracks() == ids
    # merging needs two tracks selected
    widget.tracks_panel.table.select_track(track)
    assert not widget.tracks_panel.merge()
    assert "select two tracks to merge (1 selected)" in widget.status.value
    # save
    paths = widget.save_tracks(folder=tmp_path)
    assert (tmp_path / "tracks.csv").exists() and (tmp_path / "ctc" / "res_track.txt").exists()
    assert str(tmp_path / "cells tracks.tif") in paths


def test_the_tracks_box_needs_a_time_axis(make_sansa, notifications):
    viewer, widget = open_time_lapse(make_sansa, axis_labels=("z", "y", "x"))
    box = widget.large.tracks
    assert not box.enabled
    assert "'cells' has no T axis (its frame axes: z)" in box.tooltip
    # a time-lapse chosen: enabled
    frames, _ = time_lapse()
    viewer.add_image(frames, name="movie", axis_labels=("t", "y", "x"))
    widget.image.value = viewer.layers["movie"]
    assert box.enabled
    # where the corrections are: the Tracks page (it said 'the Label page')
    assert "merge and split tracks on the Tracks page" in box.tooltip
    box.value = True
    widget.image.value = viewer.layers["cells"]  # back to the z-stack: unticked
    assert not box.value and not box.enabled
    assert widget.run_settings().tracks is None


def test_merging_overlapping_tracks_from_the_dock_changes_nothing(make_sansa, qtbot):
    viewer, widget = open_time_lapse(make_sansa)
    widget.large.tracks.value = True
    run(qtbot, widget)
    labels = viewer.layers[track_labels_name("cells")]
    table = widget.session.tracks.table
    first = np.unique(table["track"][table["t"] == 0]).tolist()
    assert len(first) == 2  # the two painted disks of frame 0
    before = np.array(labels.data)
    panel = widget.tracks_panel
    panel.table.select_track(first[0])
    panel.table.select_track(first[1], add=True)
    assert panel.table.selected_tracks() == first[:2]
    assert not panel.merge()
    message = widget.status.value
    assert f"tracks {first[0]} and {first[1]} cannot be merged" in message
    assert "they are both in frame" in message
    # what to do comes first: the dock shows ~70 characters of the status, the rest is cut
    assert message.index("split one of them first") < 60
    np.testing.assert_array_equal(labels.data, before)


def test_a_tz_stack_is_tracked_with_its_3d_objects(make_sansa, qtbot):
    frames, paint = time_lapse()
    stack = np.stack([frames[:3]] * 2, axis=1)  # (T, Z, Y, X): 3 time points, 2 planes
    refs = np.zeros(stack.shape, np.uint8)
    refs[0, 0] = paint[0]
    viewer, widget = make_sansa(
        (stack, {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image"),
        (refs, {"name": "paint"}, "labels"),
    )
    assert widget.large.tracks.enabled
    widget.large.tracks.value = True
    run(qtbot, widget)
    objects = viewer.layers["tz [sansa objects]"]
    assert "volume" in objects.features.columns  # 3D objects, one per time point
    labels = viewer.layers[track_labels_name("tz")]
    want, table = track_objects(
        np.asarray(objects.data), classes=np.asarray(viewer.layers["tz [sansa]"].data)
    )
    np.testing.assert_array_equal(labels.data, want)
    assert viewer.layers[tracks_name("tz")].data.shape == (len(table), 5)
    assert widget.tracks_panel.table.tracks() == np.unique(table["track"]).tolist()


def test_the_tracks_table_fits_the_dock_when_it_scrolls(qtbot):
    """Enough tracks for a vertical scroll bar: the five columns still fit the width the
    dock gives the table at napari's default size (no sideways scrolling, 'cls' not cut)."""
    from napari_sansa.napari._qt.tracks_panel import TrackTableWidget

    table = TrackTableWidget()
    qtbot.addWidget(table)
    n = 40
    ids = np.arange(1, n + 1) * 37  # three-digit ids
    table.set_rows(
        {
            "track": ids,
            "start": np.zeros(n, int),
            "end": np.full(n, 120),
            "parent": np.r_[0, ids[:-1]],
            "class": np.full(n, 12),
        }
    )
    table.resize(160, 200)  # the table's width in the dock at napari's default window
    table.show()
    qtbot.waitExposed(table)
    assert table.verticalScrollBar().isVisible()
    assert table.horizontalHeader().length() <= table.viewport().width()
    assert not table.horizontalScrollBar().isVisible()
    header = table.horizontalHeader()
    for k in range(table.columnCount()):  # every title whole ('from' was cut to 'rom')
        title = table.horizontalHeaderItem(k).text()
        assert header.sectionSize(k) >= header.fontMetrics().horizontalAdvance(title) + 4


@pytest.mark.slow
def test_following_with_sam2_links_on_the_runs_features(make_sansa, qtbot, propagations):
    """'follow with SAM2': the objects are carried by SAM2 on the features the run left
    in the cache (none encoded again) and linked on where they went."""
    import napari_sansa.core.propagation as propagation

    made = propagations
    viewer, widget = open_time_lapse(make_sansa)
    widget.large.tracks.value = True
    assert widget.large.follow.enabled
    widget.large.follow.value = True
    said = []
    widget.session.status.connect(said.append)
    run(qtbot, widget)
    assert widget.status.value.startswith("done: 5 frames, "), widget.status.value
    # progress while following: one step per pair of frames
    steps = [m for m in said if m.startswith("following the objects with SAM2: ")]
    assert steps[-1] == f"following the objects with SAM2: {T - 1} of {T - 1} frame pairs"
    assert len(steps) == T - 1
    assert "encoded" not in widget.status.value
    (carried,) = made
    assert (carried.encoded, carried.reused) == (0, T)  # every frame from the run's cache
    frames = np.asarray(viewer.layers["cells"].data)
    assert all(np.array_equal(carried.images[t], frames[t]) for t in range(T))
    objects = np.asarray(viewer.layers["cells [sansa objects]"].data)
    moved = propagation.propagate_objects(
        carried.model,
        frames,
        objects,
        input_size=carried.pre.input_size,
        intensity_range=carried.pre.intensity_range,
    )
    assert moved[1:].any()
    want, _ = track_objects(
        objects, classes=np.asarray(viewer.layers["cells [sansa]"].data), moved=moved
    )
    np.testing.assert_array_equal(viewer.layers[track_labels_name("cells")].data, want)


def test_painting_on_the_track_labels_updates_the_table_counts_and_plot(make_sansa):
    """A stroke on '[sansa track labels]': the Tracks page's table, the tracks per frame
    and the plot's count line follow; the page's Undo undoes the stroke, its Redo redoes
    it, and a new stroke ends what can be redone."""

    viewer, widget = linked_time_lapse(make_sansa, classes=True)
    panel = widget.tracks_panel
    labels = viewer.layers[track_labels_name("cells")]
    assert panel.table.tracks() == [1, 2] and not panel.undo_button.enabled
    assert not panel.redo_button.enabled
    labels.brush_size = 5
    labels.paint((2, 40, 6), 9)  # a new track in frame 2
    assert panel.table.tracks() == [1, 2, 9]
    assert widget.object_counts.tracks()[2]["tracks"] == 3
    assert widget.plot.counts()[2] == 3
    assert widget.status.value == "frame 2 painted: new track 9"
    assert panel.undo_button.enabled
    for track in (1, 2):  # both erased from frame 4: no track there
        labels.fill((4, *np.argwhere(labels.data[4] == track)[0]), 0)
    assert widget.object_counts.tracks()[4]["tracks"] == 0
    assert widget.plot.counts()[4] == 0
    assert panel.undo() and panel.undo()
    assert widget.plot.counts()[4] == 2
    assert panel.undo()
    assert panel.table.tracks() == [1, 2] and widget.plot.counts()[2] == 2
    assert widget.status.value == "undone: frame 2 painted: new track 9"
    assert not panel.undo_button.enabled and panel.redo_button.enabled
    # Redo (the button's click) brings the new track back, the table and plot with it
    panel.redo_button.native.click()
    assert panel.table.tracks() == [1, 2, 9] and widget.plot.counts()[2] == 3
    assert widget.status.value == "redone: frame 2 painted: new track 9"
    assert panel.undo_button.enabled and panel.redo_button.enabled  # two more to redo
    labels.paint((3, 40, 6), 9)  # a new stroke: nothing left to redo
    assert not panel.redo_button.enabled
    assert not panel.redo()
    assert widget.status.value.startswith("there is nothing to redo on the tracks")
    # the layer removed: its history is gone with it; the table is left as it was
    assert panel.undo() and panel.redo_button.enabled
    shown = panel.table.tracks()
    viewer.layers.remove(labels)
    assert not panel.undo_button.enabled and not panel.redo_button.enabled
    assert not panel.redo() and not panel.undo()
    assert "'cells [sansa track labels]' was removed" in widget.status.value
    assert panel.table.tracks() == shown


def test_the_tracks_box_explains_tracks_also_when_they_are_unavailable(make_sansa):
    """A T x C time-lapse (tracks refused: channels): the tooltip says why and still what
    tracks do (it kept only the reason once an image was chosen)."""
    frames, paint = time_lapse()
    movie = np.stack([frames, frames], axis=1).astype(np.uint16) * 200  # (T, C, Y, X)
    viewer, widget = make_sansa(
        (movie, {"name": "tc", "axis_labels": ("t", "c", "y", "x")}, "image"),
        (paint, {"name": "paint"}, "labels"),
    )
    box = widget.large.tracks
    assert widget.image.value is viewer.layers["tc"] and not box.enabled
    tip = box.tooltip
    assert "not for this image: 'tc' has other axes besides T and Z (channels)" in tip
    assert "link the objects of a time-lapse into tracks" in tip
    assert "merge and split tracks on the Tracks page" in tip
    assert tip.index("not for this image") < tip.index("link the objects")


def test_the_tracks_page_fits_napari_s_default_window(make_sansa, qtbot):
    """The Tracks page at 1089 x 630 (napari's default window): its note, table and
    buttons without scrolling (the table asked for ~190 px: the page scrolled by 25 px
    once the note said that painting counts, and the table's last column was cut)."""

    viewer, widget = linked_time_lapse(make_sansa)
    window = viewer.window._qt_window
    window.show()
    window.resize(1089, 630)
    qtbot.waitExposed(window)
    qtbot.wait(300)
    widget.show_page("Tracks")
    scroll = widget.pages["Tracks"]
    qtbot.waitUntil(scroll.isVisible)
    qtbot.wait(100)
    assert not scroll.verticalScrollBar().isVisible()
    panel = widget.tracks_panel
    assert panel.note.native.isVisible() and panel.merge_button.native.isVisible()
    assert panel.table.height() >= panel.table.minimumHeight()
    # the four buttons share one row, each word whole
    for button in (panel.merge_button, panel.split_button, panel.undo_button,
                   panel.redo_button):  # fmt: skip
        native = button.native
        assert native.isVisible(), button.text
        needs = native.sizeHint().width()  # its words and the style's frame
        assert needs <= native.width(), (button.text, needs, native.width())


def test_two_digit_track_ids_are_whole_in_the_dock(qtbot):
    """At the width the dock gives the table (150 px, a vertical scroll bar shown), ids
    10 and more are drawn whole (the cells' 2 px padding cut them to '…': track 10,
    painted by hand, showed an empty id)."""
    from qtpy.QtWidgets import QStyle, QStyleOptionViewItem

    from napari_sansa.napari._qt.tracks_panel import TrackTableWidget

    table = TrackTableWidget()
    qtbot.addWidget(table)
    n = 12
    table.set_rows({"track": np.arange(1, n + 1), "start": np.zeros(n, int),
                    "end": np.full(n, 7), "parent": np.zeros(n, int),
                    "class": np.ones(n, int)})  # fmt: skip
    table.resize(150, 150)
    table.show()
    qtbot.waitExposed(table)
    assert table.verticalScrollBar().isVisible()
    style = table.style()
    margin = style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1
    for r in range(n):
        index = table.model().index(r, 0)
        option = QStyleOptionViewItem()
        table.initViewItemOption(option)
        option.rect = table.visualRect(index)
        option.text = str(index.data())
        option.features |= QStyleOptionViewItem.ViewItemFeature.HasDisplay
        room = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, table)
        assert room.width() - 2 * margin >= table.fontMetrics().horizontalAdvance(option.text)


def _folder_outputs(out) -> dict:
    """Every file a folder run wrote (not its scratch), read back: TIFFs as arrays."""
    import tifffile

    found = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and ".napari-sansa" not in p.parts and p.name != "scores.csv":
            key = p.relative_to(out).as_posix()
            found[key] = tifffile.imread(p) if p.suffix == ".tif" else p.read_bytes()
    return found


@pytest.mark.slow
def test_a_folder_run_with_tracks_writes_what_the_command_line_writes(
    make_sansa, qtbot, tmp_path, weights
):
    """The Folder page with 'tracks' ticked links every time-lapse of the folder, as
    ``napari-sansa segment --tracks --max-move``: the track stacks, the CTC folders and
    tracks.csv, the same files; a folder with an image that has no T axis is refused in
    the widget's words (no command-line flags)."""
    import imageio.v3 as iio
    import tifffile

    from conftest import CONFIG, cli_model_args
    from napari_sansa.cli import main

    frames, paint = time_lapse()
    data = tmp_path / "data"
    data.mkdir()
    for name, movie in (("a", frames), ("b", frames[:, ::-1])):  # b: its rows mirrored
        tifffile.imwrite(data / f"{name}.tif", movie, imagej=True, metadata={"axes": "TYX"})
    iio.imwrite(tmp_path / "ref.png", frames[0])
    iio.imwrite(tmp_path / "ref_labels.png", paint[0])
    viewer, widget = open_time_lapse(make_sansa)
    widget.prompt_layers.value = [viewer.layers["paint"]]
    large = widget.large
    large.tracks.value = True
    large.min_size.value, large.seed_distance.value, large.max_move.value = 20, 5, 30
    out = tmp_path / "gui"
    widget.select_folder(data, out)
    run(qtbot, widget)
    assert widget.status.value.startswith("done: 2 image(s) labelled"), widget.status.value
    assert widget.status.value.endswith("; tracks in 'tracks.csv'")
    cli = tmp_path / "cli"
    args = ["segment", str(data), "-r", str(tmp_path / "ref.png"), str(tmp_path / "ref_labels.png")]
    args += ["--out", str(cli), *cli_model_args(weights), "--config", CONFIG, "--tracks"]
    assert main([*args, "--min-size", "20", "--seed-distance", "5", "--max-move", "30"]) == 0
    got, want = _folder_outputs(out), _folder_outputs(cli)
    assert {"a_tracks.tif", "b_tracks.tif", "tracks.csv", "a_ctc/res_track.txt"} <= set(want)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # the core's tracks of the objects, with the max move given
    objects, labels = tifffile.imread(out / "a_objects.tif"), tifffile.imread(out / "a.tif")
    linked, _ = track_objects(objects, classes=labels, max_distance=30.0)
    assert objects.shape == frames.shape and objects.max() > 1
    np.testing.assert_array_equal(tifffile.imread(out / "a_tracks.tif"), linked)
    by_default, _ = track_objects(objects, classes=labels)
    assert not np.array_equal(linked, by_default)  # (so it was used)
    # a result opened: its image, labels and track labels
    row = [r.source.name for r in widget.folder.run.results].index("a.tif")
    widget.folder.open_row(row)
    np.testing.assert_array_equal(viewer.layers["a tracks (gui)"].data, linked)
    np.testing.assert_array_equal(viewer.layers["a labels (gui)"].data, labels)
    # ... to look at: the references stay the painted layer (the labels opened are listed
    # to tick by hand, the track ids not at all), so Run finds everything finished
    assert widget.prompt_layers.value == [viewer.layers["paint"]]
    choices = [layer for _, layer in widget._prompt_choices()]
    assert viewer.layers["a labels (gui)"] in choices
    assert viewer.layers["a tracks (gui)"] not in choices
    run(qtbot, widget)
    assert widget.status.value.startswith("nothing to do: all 2 outputs"), widget.status.value
    # another max move is another run: refused, and the finished outputs stay listed
    large.max_move.value = 31
    run(qtbot, widget)
    assert "holds the results of another run" in widget.status.value
    assert widget.folder.list.count() == 2
    large.max_move.value = 30
    # the command line goes on with the widget's folder (nothing to redo) with the same
    # --max-move; max move is part of the run: the command's default is another run
    on_gui = [*args[:-1], "--tracks", "--min-size", "20", "--seed-distance", "5"]
    on_gui[on_gui.index(str(cli))] = str(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    assert main([*on_gui, "--max-move", "30"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no label written again
    assert (out / "tracks.csv").read_bytes() == got["tracks.csv"]
    assert main(on_gui) == 2
    # a file of that name that is not these tracks is not opened as them
    tifffile.imwrite(out / "b_tracks.tif", np.ones(frames.shape, np.uint8))
    widget.folder.open_row([r.source.name for r in widget.folder.run.results].index("b.tif"))
    assert "b labels (gui)" in viewer.layers and "b tracks (gui)" not in viewer.layers
    # follow with SAM2 and a tile size: refused in the widget's words
    large.follow.value, large.tile_size.value = True, 64
    widget.select_folder(data, tmp_path / "tiled")
    run(qtbot, widget)
    said = widget.status.value
    assert "carries them on whole frames" in said and "--" not in said, said
    assert not (tmp_path / "tiled" / "a.tif").exists()
    large.follow.value, large.tile_size.value = False, 0
    # an image without a T axis in the folder: refused before anything is labelled
    iio.imwrite(data / "photo.png", frames[0])
    widget.select_folder(data, tmp_path / "gui2")
    run(qtbot, widget)
    said = widget.status.value
    assert "links objects through time, but" in said and "photo.png has no T axis" in said
    assert "--" not in said and "leave 'tracks" in said, said
    assert not (tmp_path / "gui2" / "a.tif").exists()
    assert not (tmp_path / "gui2" / "a_tracks.tif").exists()
