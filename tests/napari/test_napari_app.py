"""Sample data, the manifest's contributions inside napari, and ``_app.launch``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sansa.napari.sample_data import coins_frames, make_sample_data


def test_sample_is_a_small_stack_with_references_on_frame_0():
    (image, image_meta, kind), (labels, labels_meta, lkind), (points, pmeta, pkind) = (
        make_sample_data()
    )
    assert (kind, lkind, pkind) == ("image", "labels", "points")
    assert image.shape == (8, 256, 256) and image.dtype == np.uint8
    assert labels.shape == image.shape
    assert labels[0].any() and not labels[1:].any()
    assert set(np.unique(labels)) == {0, 1}
    from skimage.measure import label

    assert label(labels[0]).max() == 3  # three painted coins
    assert points.shape == (0, 3) and list(pmeta["features"].columns) == ["label", "positive"]
    # frames move over the picture: consecutive frames differ but overlap
    _, offsets = coins_frames()
    assert (np.diff(offsets, axis=0) > 0).all()
    assert not np.array_equal(image[0], image[1])


@pytest.mark.gui
def test_sample_opens_and_runs_in_the_widget(
    make_napari_viewer, sansa_env, shared_model_cache, qtbot, monkeypatch
):
    import napari
    from napari_sansa.napari import app as _app

    viewer_kwargs = {}

    def fake_viewer(**kwargs):
        viewer_kwargs.update(kwargs)
        return make_napari_viewer()

    monkeypatch.setattr(napari, "Viewer", fake_viewer)
    monkeypatch.setattr(
        napari, "run", lambda *a, **k: pytest.fail("block=False must not run napari")
    )
    viewer, widget = _app.launch(sample=True, block=False)
    assert [layer.name for layer in viewer.layers] == [
        "coins time-lapse",
        "coins time-lapse [sansa references]",
        "coins time-lapse [sansa points]",
    ]
    assert type(widget).__name__ == "SansaWidget"
    assert widget.image.value is viewer.layers["coins time-lapse"]
    assert widget.prompt_layers.value == list(viewer.layers)[1:]
    assert widget.current_frame() == 0  # the painted frame is the one shown
    widget.model_panel.device.value = "cpu"
    widget.session.models = shared_model_cache
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=180_000)
    assert widget.status.value == "done: 8 frames"
    out = viewer.layers["coins time-lapse [sansa]"]
    np.testing.assert_array_equal(out.data[0], viewer.layers[1].data[0])


@pytest.mark.gui
def test_writer_contribution_saves_the_output_layer(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    data = np.zeros((3, 16, 16), np.uint8)
    data[1, 4:8, 4:8] = 2
    viewer.add_labels(data, name="cells [sansa]")
    paths = viewer.layers.save(str(tmp_path / "labels.tif"), plugin="napari-sansa")
    assert paths == [str(tmp_path / "labels.tif")]
    np.testing.assert_array_equal(tifffile.imread(paths[0]), data)


@pytest.mark.gui
def test_save_frames_action(make_sansa, tmp_path, notifications):
    viewer, widget = make_sansa((np.zeros((3, 16, 16), np.uint8), {"name": "cells"}, "image"))
    assert widget.save_frames(tmp_path) == []
    assert "run SANSA first" in notifications()[-1]
    data = np.zeros((3, 16, 16), np.uint8)
    data[2, 1:3, 1:3] = 1
    viewer.add_labels(data, name="cells [sansa]", metadata={"napari-sansa": "output"})
    widget.save_folder.value = tmp_path / "out"
    widget.save_format.value = "png"
    widget.save_button.native.click()
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["cells_0000.png", "cells_0001.png", "cells_0002.png"]
    assert "saved 3 frame(s)" in notifications()[-1]


@pytest.mark.gui
def test_file_open_sample_shows_the_painted_frame(make_sansa):
    viewer, widget = make_sansa()
    viewer.open_sample("napari-sansa", "coins-timelapse")
    assert widget.image.value is viewer.layers["coins time-lapse"]
    assert viewer.dims.current_step[0] == 0
    assert widget.current_frame() == 0


def test_gui_without_a_display_says_so_once_and_exits_2(tmp_path):
    """Without a display Qt printed each of its errors twice and aborted (exit 134)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    env["NAPARI_SANSA_SETTINGS"] = str(tmp_path / "widget.json")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    code = "import sys; from napari_sansa.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "gui", "--sample"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-sansa: error: no display"), lines
    assert "xvfb-run" in lines[0]


@pytest.mark.parametrize(
    ("environ", "platform", "ok"),
    [({}, "linux", False), ({"DISPLAY": ":0"}, "linux", True),
     ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
     ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True), ({}, "darwin", True),
     ({}, "win32", True)],
)  # fmt: skip
def test_display_problem(environ, platform, ok):
    from napari_sansa.napari.app import display_problem

    assert (display_problem(environ, platform) is None) is ok
