"""The SANSA dock widget on a real napari viewer (Xvfb), with the tiny random-weight model.

Runs go through the real worker thread and are awaited with qtbot.waitUntil.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Labels, Points

import napari_sansa as ns
from conftest import make_image, previews_idle

pytestmark = pytest.mark.gui

N, H, W = 4, 48, 64
TIMEOUT = 180_000  # ms; a shared 2-core machine can be slow


def frames(n=N, rgb=False, seed=10):
    return np.stack([make_image(seed + i, (H, W), rgb=rgb) for i in range(n)])


def mask_on(frame, n=N, value=1, box=(8, 30, 10, 40)):
    data = np.zeros((n, H, W), np.uint8)
    r0, r1, c0, c1 = box
    data[frame, r0:r1, c0:c1] = value
    return data


def names(select):
    """The texts shown in a magicgui Select (a QListWidget)."""
    return [select.native.item(i).text() for i in range(select.native.count())]


def wait_done(qtbot, widget, timeout=TIMEOUT):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_done(qtbot, widget)
    return worker


def snapshot(layers):
    out = []
    for layer in layers:
        data = layer.data
        data = [np.array(d) for d in data] if isinstance(data, list) else np.array(data)
        features = layer.features.copy() if hasattr(layer, "features") else None
        out.append((layer, data, features))
    return out


def assert_unchanged(snap):
    for layer, data, features in snap:
        now = layer.data
        if isinstance(data, list):
            assert len(now) == len(data)
            for a, b in zip(now, data, strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_array_equal(now, data)
        if features is not None:
            pd.testing.assert_frame_equal(layer.features, features)


# -- defaults ----------------------------------------------------------------------------


def test_widget_preselects_the_image_and_fitting_prompt_layers(make_sansa):
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (mask_on(0), {"name": "paint"}, "labels"),
        (np.array([[10.0, 10.0]]), {"name": "flat"}, "points"),  # 2D: does not fit
    )
    assert widget.image.value is viewer.layers["cells"]
    assert [layer.name for layer in widget.prompt_layers.value] == ["paint"]
    assert names(widget.prompt_layers) == ["paint (labels)", "flat (points)"]
    # follows layers being added, renamed and removed
    clicks = viewer.add_points(np.array([[1, 5, 5]]), name="clicks")
    assert clicks in widget.prompt_layers.value
    clicks.name = "my clicks"
    assert "my clicks (points)" in names(widget.prompt_layers)
    assert clicks in widget.prompt_layers.value
    viewer.layers.remove(clicks)
    assert clicks not in widget.prompt_layers.value
    assert "my clicks (points)" not in names(widget.prompt_layers)
    # the frame range follows the image
    assert (widget.first_frame.value, widget.last_frame.value, widget.last_frame.max) == (
        0,
        N - 1,
        N - 1,
    )


def test_model_defaults_come_from_the_environment(make_sansa, sansa_env, monkeypatch, tmp_path):
    _, widget = make_sansa((frames(), {}, "image"))
    sam2, adapters = sansa_env
    assert widget.model_panel.model.value == "custom files"
    assert widget.model_panel.config.value == "sam2_hiera_t"
    assert str(widget.model_panel.sam2_file.value) == str(sam2)
    assert str(widget.model_panel.adapter_file.value) == str(adapters)
    assert widget.model_panel.image_size.value == 256
    # the file choosers are shown with custom files only (isHidden: hidden by the panel
    # itself, whether or not the window is on screen)
    files = (widget.model_panel.sam2_file, widget.model_panel.adapter_file)
    assert not any(w.native.isHidden() for w in files)
    widget.model_panel.model.value = "sansa-universal"
    assert all(w.native.isHidden() for w in files)
    for name in ("CONFIG", "SAM2_CHECKPOINT", "ADAPTER_CHECKPOINT", "IMAGE_SIZE"):
        monkeypatch.delenv(f"NAPARI_SANSA_{name}")
    # a first start: no remembered settings (the first widget saved its own)
    monkeypatch.setenv("NAPARI_SANSA_SETTINGS", str(tmp_path / "fresh" / "widget.json"))
    _, plain = make_sansa((frames(), {}, "image"))
    assert plain.model_panel.model.value == "sansa-universal"
    assert plain.model_panel.model.choices[-1] == "custom files"
    assert {m["name"] for m in ns.list_models()} <= set(plain.model_panel.model.choices)
    assert plain.model_panel.image_size.value == 0


# -- a full run --------------------------------------------------------------------------


def test_run_labels_every_other_frame_like_the_core(make_sansa, qtbot, model, notifications):
    images = frames()
    paint = mask_on(0)
    viewer, widget = make_sansa(
        (images, {"name": "cells", "scale": (1, 0.5, 0.25), "translate": (0, 3, 4)}, "image"),
        (paint, {"name": "paint", "scale": (1, 0.5, 0.25), "translate": (0, 3, 4)}, "labels"),
    )
    # clicks for class 2 on frame 2, drawn in world coordinates (its own transform)
    clicks = viewer.add_points(
        np.array([[2, 3 + 0.5 * 20, 4 + 0.25 * 30], [2, 3 + 0.5 * 40, 4 + 0.25 * 5]]),
        features={"label": [2, 2], "positive": [True, False]},
        name="clicks",
    )
    prompts = [viewer.layers["paint"], clicks]
    assert widget.prompt_layers.value == prompts
    before = snapshot(prompts)

    worker = run(qtbot, widget)

    out = viewer.layers["cells [sansa]"]
    image = viewer.layers["cells"]
    assert isinstance(out, Labels)
    assert out.data.shape == (N, H, W) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, image.scale)
    np.testing.assert_allclose(out.translate, image.translate)
    assert_unchanged(before)
    # the same job through the core's public API
    refs = [
        ns.Reference(images[0], [ns.Mask(paint[0] == 1, label=1)]),
        ns.Reference(images[2], [ns.Points([[20, 30], [40, 5]], label=2, positive=[True, False])]),
    ]
    expected = model.segment(refs, [images[1], images[3]])
    assert not np.array_equal(expected[0].labels, expected[1].labels)  # frames differ
    np.testing.assert_array_equal(out.data[1], expected[0].labels)
    np.testing.assert_array_equal(out.data[3], expected[1].labels)
    # reference frames: the painted mask as it is, the decoded clicks
    np.testing.assert_array_equal(out.data[0], paint[0])
    np.testing.assert_array_equal(out.data[2], expected.references[1].labels)
    # progress, table and state afterwards
    assert widget.progress.value == widget.progress.max == 4
    assert widget.status.value == "done: 4 frames"
    assert sorted(widget.scores.frames()) == [0, 1, 2, 3]
    assert widget.scores.min_scores()[0] == 1.0  # a painted mask is certain
    assert widget.scores.min_scores()[1] == pytest.approx(
        min(expected[0].scores.values()), abs=1e-3
    )
    assert widget.run_button.enabled and not widget.stop_button.enabled
    assert worker.pbar is not None and worker.pbar.n == 4
    assert not [s for s in notifications.severities() if s == "error"]


def test_the_model_is_loaded_in_the_worker_on_first_run_and_kept(make_sansa, qtbot):
    viewer, widget = make_sansa(
        (frames(n=2), {"name": "cells"}, "image"),
        (mask_on(0, n=2), {"name": "paint"}, "labels"),
        share_model=False,
    )
    assert widget.session.models.loads == 0  # nothing is loaded when the widget opens
    assert widget.status.value.startswith("ready:")  # no loading message either
    run(qtbot, widget)
    assert widget.session.models.loads == 1
    out = viewer.layers["cells [sansa]"]
    data = out.data
    first = out.data[1].copy()
    # a re-run with another threshold: same model, same layer, updated in place
    widget.threshold.value = 0.95
    run(qtbot, widget)
    assert widget.session.models.loads == 1
    assert viewer.layers["cells [sansa]"] is out and out.data is data
    previews_idle(qtbot, widget, TIMEOUT)  # the preview the paint layer asked for
    made = [layer.name for layer in viewer.layers if layer.name.startswith("cells [sansa")]
    assert sorted(made) == ["cells [sansa preview]", "cells [sansa]"]  # one output (and the
    # preview of the prompts on the frame shown)
    assert (out.data[1] > 0).sum() <= (first > 0).sum()
    # "auto" is the CPU on this machine: the very same model, not loaded again
    import torch

    widget.model_panel.device.value = "auto"
    run(qtbot, widget)
    assert widget.session.models.loads == (2 if torch.cuda.is_available() else 1)


def test_stop_ends_the_run_within_a_frame(make_sansa, qtbot):
    from qtpy.QtCore import Qt

    n = 8
    viewer, widget = make_sansa(
        (frames(n=n, seed=700), {"name": "cells"}, "image"),  # not run before: not cached
        (mask_on(0, n=n), {"name": "paint"}, "labels"),
    )
    widget.mode.value = "sequential"
    worker = widget.run()
    emitted = []  # counted in the worker thread, as each frame is handed over
    worker.yielded.connect(lambda r: emitted.append(r.frame), Qt.ConnectionType.DirectConnection)
    assert widget.stop_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.session.done >= 2, timeout=TIMEOUT)
    widget.stop_button.native.click()
    at_stop = len(emitted)
    written = widget.session.done  # frames written when Stop was pressed
    wait_done(qtbot, widget)
    assert worker.abort_requested
    # at most the frame being computed when Stop was pressed is handed over after it,
    # and nothing is written after it
    assert 2 <= written == widget.session.done <= len(emitted) <= at_stop + 1 < n
    assert widget.status.value == f"stopped: {written} of {n} frames done"
    out = viewer.layers["cells [sansa]"].data
    assert not out[written:].any()  # frames after the stop were never written
    assert widget.run_button.enabled and not widget.stop_button.enabled


def test_pressing_run_while_running_is_ignored(make_sansa, qtbot, notifications):
    _, widget = make_sansa(
        (frames(n=3, seed=720), {"name": "cells"}, "image"),  # not run before: not cached
        (mask_on(0, n=3), {"name": "paint"}, "labels"),
    )
    worker = widget.run()
    assert not widget.run_button.enabled
    widget.run_button.native.click()  # disabled: nothing happens
    assert widget.run() is worker
    assert any("already running" in m for m in notifications())
    wait_done(qtbot, widget)
    assert widget.session.done == 3


# -- correction loop and confidence ------------------------------------------------------


def test_a_fixed_frame_becomes_a_reference_for_the_next_run(make_sansa, qtbot):
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (mask_on(0), {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    out = viewer.layers["cells [sansa]"]
    # the person fixes frame 2 by hand
    fixed = np.zeros((H, W), np.uint8)
    fixed[20:40, 30:60] = 1
    out.data[2] = fixed
    widget.go_to_frame(2)
    assert viewer.dims.current_step[0] == 2
    refs = widget.use_current_frame_as_reference()
    assert refs is viewer.layers["cells [sansa references]"]
    assert refs.data.shape == (N, H, W)
    np.testing.assert_array_equal(refs.data[2], fixed)
    assert not refs.data[[0, 1, 3]].any()
    assert refs in widget.prompt_layers.value
    run(qtbot, widget)
    assert viewer.layers["cells [sansa]"] is out
    np.testing.assert_array_equal(out.data[2], fixed)  # now a reference: kept as it is
    assert widget.scores.kinds() == {0: "reference", 1: "predicted", 2: "reference", 3: "predicted"}


def test_use_current_frame_needs_an_output_with_content(make_sansa, notifications):
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    assert widget.use_current_frame_as_reference() is None
    assert "run SANSA first" in notifications()[-1]
    viewer.add_labels(
        np.zeros((N, H, W), np.uint8), name="cells [sansa]", metadata={"napari-sansa": "output"}
    )
    widget.go_to_frame(3)
    assert widget.use_current_frame_as_reference() is None
    assert "frame 3 of 'cells [sansa]' is empty" in notifications()[-1]
    assert "cells [sansa references]" not in viewer.layers


def test_confidence_table_sorts_and_jumps_to_frames(make_sansa, qtbot):
    from qtpy.QtCore import Qt

    n = 6
    viewer, widget = make_sansa(
        (frames(n=n), {"name": "cells"}, "image"),
        (mask_on(0, n=n), {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    table = widget.scores
    scores = table.min_scores()
    assert sorted(scores) == list(range(n))
    table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    shown = table.frames()
    assert [scores[f] for f in shown] == sorted(scores.values())
    # clicking the row of the least confident frame shows it
    target = shown[0] if shown[0] != viewer.dims.current_step[0] else shown[1]
    row = shown.index(target)
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert viewer.dims.current_step[0] == target
    assert widget.current_frame() == target


# -- image kinds -------------------------------------------------------------------------


def test_rgb_stack_with_frame_shaped_labels_and_probability_maps(make_sansa, qtbot):
    images = frames(n=3, rgb=True)
    skew = np.array([[1, 0, 0, 0], [0, 1, 0.2, 0], [0, 0, 1, 5], [0, 0, 0, 1]])
    viewer, widget = make_sansa(
        (images, {"name": "rgb", "rgb": True, "affine": skew}, "image"),
        (mask_on(1, n=3, value=3), {"name": "paint", "affine": skew}, "labels"),
    )
    assert widget.prompt_layers.value == [viewer.layers["paint"]]
    widget.probabilities.value = True
    run(qtbot, widget)
    out = viewer.layers["rgb [sansa]"]
    assert out.data.shape == (3, H, W)
    np.testing.assert_allclose(out.affine.affine_matrix, skew)
    np.testing.assert_array_equal(out.data[1], mask_on(1, n=3, value=3)[1])
    assert set(np.unique(out.data)) <= {0, 3}
    prob = viewer.layers["rgb [sansa p3]"]
    assert prob.data.shape == (3, H, W) and prob.data.dtype == np.float32
    assert prob.data.min() >= 0 and prob.data.max() <= 1
    np.testing.assert_array_equal(prob.data[1], mask_on(1, n=3)[1].astype(np.float32))
    # the class map is the thresholded probability (one class)
    np.testing.assert_array_equal(out.data[0] == 3, prob.data[0] > 0.5)
    # probability and output layers are not offered as image or prompts
    assert [layer.name for layer in widget.image.choices] == ["rgb"]
    assert "rgb [sansa]" not in [layer.name for layer in widget.prompt_layers.choices]


def test_a_4d_stack_is_labelled_plane_by_plane(make_sansa, qtbot):
    images = frames(n=4).reshape(2, 2, H, W)
    viewer, widget = make_sansa((images, {"name": "tz"}, "image"))
    clicks = viewer.add_points(np.array([[1, 0, 20, 30]]), name="clicks")  # t=1, z=0
    assert widget.prompt_layers.value == [clicks]
    assert widget.axes.ranges.value() == {0: (0, 1), 1: (0, 1)}  # a range per axis
    run(qtbot, widget)
    out = viewer.layers["tz [sansa]"]
    assert out.data.shape == (2, 2, H, W)
    assert sorted(widget.scores.frames()) == [0, 1, 2, 3]
    kinds = widget.scores.kinds()
    assert kinds[2] == "reference" and kinds[3] == "predicted"
    widget.go_to_frame(3)
    assert viewer.dims.current_step[:2] == (1, 1)
    assert widget.current_frame() == 3


# -- bad input: a clear message, nothing changed ----------------------------------------


def _bad_inputs():
    ok_image = (frames(), {"name": "cells"}, "image")
    return {
        "no image": ([], None, "there is no image layer"),
        "no prompt layer": ([ok_image], None, "no prompt layers are selected"),
        "no prompts": (
            [ok_image, (np.zeros((N, H, W), np.uint8), {"name": "paint"}, "labels")],
            None,
            "hold no prompts for 'cells'",
        ),
        "prompts on every frame": (
            [ok_image, (np.ones((N, H, W), np.uint8), {"name": "paint"}, "labels")],
            None,
            "every frame of 'cells' has prompts",
        ),
        "2D prompts on a stack": (
            [ok_image, (np.array([[10.0, 10.0]]), {"name": "flat"}, "points")],
            "flat",
            "'flat' has 2 dimensions but the image 'cells' has 3",
        ),
        "label 0": (
            [
                ok_image,
                (np.array([[0, 10, 10]]), {"name": "p", "features": {"label": [0]}}, "points"),
            ],
            None,
            "point 0 of layer 'p' has label=0",
        ),
        "text label": (
            [
                ok_image,
                (np.array([[0, 10, 10]]), {"name": "p", "features": {"label": ["cell"]}}, "points"),
            ],
            None,
            "has label='cell'",
        ),
        "positive not a flag": (
            [
                ok_image,
                (np.array([[0, 10, 10]]), {"name": "p", "features": {"positive": [0.5]}}, "points"),
            ],
            None,
            "has positive=0.5",
        ),
        "single 2D image": (
            [
                (frames()[0], {"name": "photo"}, "image"),
                (np.array([[10.0, 10.0]]), {"name": "p"}, "points"),
            ],
            None,
            "'photo' is a single image",
        ),
        "labels of another size on RGB": (
            [
                (frames(rgb=True), {"name": "rgb", "rgb": True}, "image"),
                (np.ones((N, H, W - 4), np.uint8), {"name": "paint"}, "labels"),
            ],
            "paint",
            (
                f"'paint' has shape ({N}, {H}, {W - 4}), but masks for 'rgb' need shape "
                f"({N}, {H}, {W})"
            ),
        ),
        "no SAM2 file": (
            [ok_image, (mask_on(0), {"name": "paint"}, "labels")],
            "no-sam2",
            "choose the SAM2 weights file",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_gives_a_clear_message_and_changes_nothing(case, make_sansa, notifications):
    layers, select, message = _bad_inputs()[case]
    viewer, widget = make_sansa(*layers)
    if select == "no-sam2":
        widget.model_panel.sam2_file.value = None
    elif select is not None:
        widget.prompt_layers.value = [viewer.layers[select]]
    before = snapshot(list(viewer.layers))
    names = [layer.name for layer in viewer.layers]
    assert widget.run() is None
    assert message in notifications()[-1], notifications()
    assert notifications.severities()[-1] == "error"
    assert message in widget.status.value
    assert [layer.name for layer in viewer.layers] == names  # no output layer made
    assert_unchanged(before)
    assert widget.run_button.enabled and widget.worker is None


def test_missing_weights_are_reported_and_the_widget_stays_usable(
    make_sansa, qtbot, notifications, tmp_path, sansa_env
):
    viewer, widget = make_sansa(
        (frames(n=2), {"name": "cells"}, "image"),
        (mask_on(0, n=2), {"name": "paint"}, "labels"),
        share_model=False,
    )
    missing = tmp_path / "nowhere" / "sam2_hiera_tiny.pt"
    widget.model_panel.sam2_file.value = str(missing)
    run(qtbot, widget)
    errors = [
        m for m, s in zip(notifications(), notifications.severities(), strict=True) if s == "error"
    ]
    assert len(errors) == 1 and "nowhere" in errors[0]
    assert widget.status.value == errors[0]
    assert widget.run_button.enabled and not widget.stop_button.enabled
    assert "cells [sansa]" not in viewer.layers  # a run that fails before its first frame
    # fixed: the next run works
    widget.model_panel.sam2_file.value = str(sansa_env[0])
    run(qtbot, widget)
    assert widget.status.value == "done: 2 frames"


def test_an_unusable_frame_stops_the_run_with_the_cores_message(make_sansa, qtbot, notifications):
    images = frames().astype(np.float32) / 255
    images[2, 10, 10] = np.nan
    viewer, widget = make_sansa(
        (images, {"name": "cells", "contrast_limits": (0, 1)}, "image"),
        (mask_on(0), {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    message = notifications()[-1]
    assert "contains NaN or infinite values" in message
    assert notifications.severities()[-1] == "error"
    assert widget.status.value == message
    assert widget.session.done == 2  # the reference and frame 1, before the bad frame
    assert widget.run_button.enabled


# -- layers removed, viewer closed during a run ------------------------------------------


def test_removing_layers_during_a_run(make_sansa, qtbot, notifications):
    n = 6
    viewer, widget = make_sansa(
        (frames(n=n, seed=740), {"name": "cells"}, "image"),  # not run before: not cached
        (mask_on(0, n=n), {"name": "paint"}, "labels"),
    )
    widget.run()
    qtbot.waitUntil(lambda: widget.session.done >= 1, timeout=TIMEOUT)
    # the prompt and image layers can go: the run has what it needs
    viewer.layers.remove("paint")
    viewer.layers.remove("cells")
    qtbot.waitUntil(lambda: widget.session.done >= 3, timeout=TIMEOUT)
    # the output layer going stops the run
    out = viewer.layers["cells [sansa]"]
    viewer.layers.remove(out)
    wait_done(qtbot, widget)
    assert widget.session.done < n
    assert any("output layer 'cells [sansa]' was removed" in m for m in notifications())
    assert widget.run_button.enabled
    assert widget.status.value.startswith("stopped")


def hold_after_first_frame(monkeypatch):
    """Make the next run wait after it has handed over its first labelled frame until
    ``go_on`` is set: ``(waiting, go_on, handed)``, ``handed`` the frames it handed over
    (references first)."""
    import functools
    import threading

    from napari_sansa.napari import session

    waiting, go_on, handed = threading.Event(), threading.Event(), []
    run_frames = session.run_frames

    @functools.wraps(run_frames)
    def held(*args, **kwargs):
        frames = run_frames(*args, **kwargs)
        try:
            while True:
                try:
                    result = next(frames)
                except StopIteration as end:
                    return end.value
                handed.append(result)
                yield result
                if not result.is_reference and not waiting.is_set():
                    waiting.set()
                    go_on.wait(TIMEOUT / 1000)
        finally:
            frames.close()

    monkeypatch.setattr(session, "run_frames", held)
    return waiting, go_on, handed


def test_closing_the_viewer_during_a_run(make_sansa, qtbot, monkeypatch):
    waiting, go_on, handed = hold_after_first_frame(monkeypatch)
    viewer, widget = make_sansa(
        (frames(n=10, seed=760), {"name": "cells"}, "image"),  # not run before: not cached
        (mask_on(0, n=10), {"name": "paint"}, "labels"),
    )
    # the run goes on only once Qt has deleted the closed viewer's widget
    widget.native.destroyed.connect(lambda *_: go_on.set())
    worker = widget.run()
    qtbot.waitUntil(waiting.is_set, timeout=TIMEOUT)  # after its first labelled frame
    viewer.close()
    qtbot.waitUntil(go_on.is_set, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT)
    assert worker.abort_requested
    # the close stopped the run before it labelled another of the 9 frames
    assert [r.is_reference for r in handed] == [True, False]
    qtbot.wait(50)
    assert widget.worker is None


# -- prompt helpers ----------------------------------------------------------------------


def test_class_and_polarity_set_what_the_next_click_gets(make_sansa):
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    plain = viewer.add_points(np.array([[0, 5, 5]]), name="plain")  # no features yet
    viewer.layers.selection.active = plain
    widget.class_id.value = 3
    widget.polarity.value = "negative"
    assert plain.features["label"].tolist() == [1]  # existing click keeps its implicit values
    assert plain.features["positive"].tolist() == [True]
    plain.add(np.array([1, 6, 6]))
    assert plain.features["label"].tolist() == [1, 3]
    assert plain.features["positive"].tolist() == [True, False]
    # the widget shows the active layer's next class
    paint = viewer.add_labels(np.zeros((N, H, W), np.uint8), name="paint")
    paint.selected_label = 5
    viewer.layers.selection.active = paint
    assert widget.class_id.value == 5
    widget.class_id.value = 2
    assert paint.selected_label == 2
    viewer.layers.selection.active = plain
    assert (widget.class_id.value, widget.polarity.value) == (3, "negative")


def test_new_prompt_layer_buttons(make_sansa):
    viewer, widget = make_sansa((frames(), {"name": "cells", "scale": (1, 2, 2)}, "image"))
    widget.class_id.value = 2
    widget.new_points_button.native.click()
    points = viewer.layers["cells [sansa points]"]
    assert isinstance(points, Points) and points.ndim == 3 and points.mode == "add"
    np.testing.assert_allclose(points.scale, (1, 2, 2))
    points.add(np.array([1, 10, 10]))
    assert points.features.to_dict("list") == {"label": [2], "positive": [True]}
    widget.new_shapes_button.native.click()
    shapes = viewer.layers["cells [sansa shapes]"]
    assert shapes.ndim == 3 and shapes.feature_defaults["label"][0] == 2
    widget.new_labels_button.native.click()
    refs = viewer.layers["cells [sansa references]"]
    assert refs.data.shape == (N, H, W) and refs.selected_label == 2
    assert widget.prompt_layers.value == [points, shapes, refs]


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (RuntimeError("CUDA out of memory"), "SANSA failed: RuntimeError: CUDA out of memory"),
        (MemoryError("the image does not fit"), "the image does not fit"),
    ],
    ids=["torch-runtime-error", "memory"],
)
def test_failures_in_the_worker_are_shown_and_the_widget_stays_usable(
    make_sansa, qtbot, notifications, monkeypatch, error, shown
):
    from napari_sansa.napari.worker import ModelCache

    def broken(self, settings):
        raise error

    monkeypatch.setattr(ModelCache, "get", broken)
    _, widget = make_sansa(
        (frames(n=2), {"name": "cells"}, "image"),
        (mask_on(0, n=2), {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    assert notifications()[-1] == shown
    assert notifications.severities()[-1] == "error"
    assert widget.status.value == shown
    assert widget.run_button.enabled and not widget.stop_button.enabled


def test_a_bug_in_the_worker_reaches_napari_with_its_traceback(make_sansa, qtbot, monkeypatch):
    from napari_sansa.napari.worker import ModelCache

    def broken(self, settings):
        raise KeyError("a bug")

    monkeypatch.setattr(ModelCache, "get", broken)
    _, widget = make_sansa(
        (frames(n=2), {"name": "cells"}, "image"),
        (mask_on(0, n=2), {"name": "paint"}, "labels"),
    )
    # napari's worker re-raises it in the event loop, where napari shows it
    with qtbot.capture_exceptions() as raised:
        run(qtbot, widget)
    assert [type(e[1]) for e in raised] == [KeyError]
    assert widget.status.value == "KeyError: 'a bug'"
    assert widget.run_button.enabled
