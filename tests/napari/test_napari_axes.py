"""Channels and frame axes on a real viewer (Xvfb): (T, C, Y, X) and (T, Z, Y, X) stacks,
and the widget's width beside the canvas at napari's default window."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image

pytestmark = pytest.mark.gui

TIMEOUT = 180_000
H, W = 40, 48


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


def tcyx(t=3, c=2):
    return (
        np.stack(
            [
                np.stack([make_image(10 * i + k, (H, W), rgb=False) for k in range(c)])
                for i in range(t)
            ]
        ).astype(np.uint16)
        * 100
    )


def test_a_tcyx_stack_counts_time_points_not_channels(make_sansa, qtbot):
    data = tcyx()
    viewer, widget = make_sansa(
        (data, {"name": "cells", "axis_labels": ("t", "c", "y", "x")}, "image")
    )
    image = viewer.layers["cells"]
    assert widget.axes.channel_axis.value == 1
    assert widget.axes.channels.value == (0,)
    assert widget.axes.note.value == "3 frame(s): t (3)"  # the channels: in their boxes
    assert "3 frame(s): t (3); channels on c: channel 0 as gray" in widget.axes.note.tooltip
    assert widget.last_frame.max == 2
    paint = widget.new_labels_layer()  # the image's shape: labels on every channel
    assert paint.data.shape == data.shape
    paint.data[0, 1, 5:20, 5:30] = 1  # painted while channel 1 was shown
    before = data.copy()
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.status.value == "done: 3 frames"
    out = viewer.layers["cells [sansa]"]
    assert out.data.shape == data.shape
    np.testing.assert_array_equal(out.data[:, 0], out.data[:, 1])  # same labels per channel
    np.testing.assert_array_equal(out.data[0, 0], paint.data[0, 1])
    assert sorted(widget.scores.frames()) == [0, 1, 2]
    np.testing.assert_array_equal(image.data, before)  # the image is not changed
    # channel 1 as gray, then both as red and green: the plan's frames follow
    widget.axes.channels.value = (1,)
    plan = widget.session.plan
    assert "channel 1 as gray" in widget.axes.note.tooltip
    widget.axes.channels.value = (0, 1)
    assert "0 as red, 1 as green" in widget.axes.note.tooltip
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    frame = widget.session.plan.parts[0].stack[1]
    assert frame.shape == (H, W, 3) and not frame[..., 2].any()
    assert plan is not widget.session.plan


def test_an_undeclared_4d_stack_says_how_it_is_read_and_the_channel_axis_can_be_chosen(
    make_sansa,
):
    data = tcyx(t=2, c=3)
    viewer, widget = make_sansa((data, {"name": "cells"}, "image"))
    assert widget.axes.channel_axis.value is None
    assert "axes not named" in widget.axes.note.value
    # 2 x 3 planes, as it says: a range on each axis
    rows = [r for r in widget.axes.ranges.rows if not r[0].native.isHidden()]
    assert [(name.value, last.max) for _, name, _, last in rows] == [("axis 0", 1), ("axis 1", 2)]
    widget.axes.channel_axis.value = 1
    assert widget.last_frame.max == 1
    assert "channels on axis 1" in widget.axes.note.tooltip
    assert viewer.layers["cells"].axis_labels == ("-4", "-3", "-2", "-1")  # not changed


def test_a_declared_channel_axis_that_cannot_be_one_is_refused_with_the_control(
    make_sansa, notifications
):
    data = np.zeros((20, 2, H, W), np.uint8)
    data[:] = make_image(1, (H, W), rgb=False)
    viewer, widget = make_sansa(
        (data, {"name": "odd", "axis_labels": ("c", "t", "y", "x")}, "image"),
        (np.zeros(data.shape, np.uint8), {"name": "paint"}, "labels"),
    )
    viewer.layers["paint"].data[0, 0, 5:20, 5:20] = 1
    widget.prompt_layers.value = [viewer.layers["paint"]]
    assert widget.run() is None
    message = notifications()[-1]
    assert "declares its c axis (axis 0, 20 long) as channels" in message
    assert "'channel axis'" in message
    widget.axes.channel_axis.value = 1  # the person says where the channels are
    assert widget.last_frame.max == 19


def test_sequential_mode_runs_along_the_chosen_axis_never_across(make_sansa, qtbot, monkeypatch):
    from napari_sansa.core.model import SansaModel

    data = tcyx(t=2, c=3)[..., :, :].astype(np.uint8)  # (T=2, Z=3, Y, X)
    viewer, widget = make_sansa(
        (data, {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image")
    )
    paint = widget.new_labels_layer()
    paint.data[0, 0, 5:20, 5:30] = 1
    seen = []
    real = SansaModel.segment_iter

    def spy(self, references, targets, options=None, **kw):
        seen.append((options.mode, len(targets)))
        return real(self, references, targets, options, **kw)

    monkeypatch.setattr(SansaModel, "segment_iter", spy)
    widget.mode.value = "sequential"
    assert widget.axes.sequential_axis.value == "z"  # within each time point
    worker = widget.run()
    assert worker is not None, widget.status.value
    order = []
    widget.session.frame_written.connect(lambda r: order.append(r.frame))
    wait_done(qtbot, widget)
    assert seen == [("sequential", 2), ("sequential", 3)]  # t=0: z=1,2; t=1: z=0,1,2
    assert order == [0, 1, 2, 3, 4, 5]
    seen.clear()
    order.clear()
    widget.axes.sequential_axis.value = "t"  # for each z
    assert widget.run() is not None
    wait_done(qtbot, widget)
    assert seen == [("sequential", 1), ("sequential", 2), ("sequential", 2)]
    assert order == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("width", [1066, 1089])
def test_the_canvas_keeps_most_of_the_width_at_napari_s_default_window(make_sansa, qtbot, width):
    viewer, widget = make_sansa(
        (np.zeros((3, 4, H, W), np.uint16), {"name": "tz", "axis_labels": ("t", "z", "y", "x")},
         "image")
    )  # fmt: skip
    window = viewer.window._qt_window
    window.resize(width, 700)  # napari's default width on a 1600 x 1000 screen (two runs)
    window.show()
    qtbot.waitExposed(window)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(lambda: canvas.width() > 0)
    qtbot.wait(300)  # the docks settle
    total = window.width()
    before = canvas.width()
    print(f"window {total} px, canvas {before} px, dock {widget.native.width()} px")
    assert total == width
    assert before > 0.5 * total  # most of the width; napari's own layer dock takes ~320 px
    # every control fits into the narrow dock (nothing cut off on the right)
    body = widget.scroll_area.widget()
    assert body.minimumSizeHint().width() <= widget.scroll_area.viewport().width()
    # a long message wraps inside the dock: nothing grows, Run does not move
    run_at = widget.run_button.native.mapTo(window, widget.run_button.native.rect().topLeft())
    widget.session.notify("a long message " * 40, popup=False)
    qtbot.wait(50)
    assert window.width() == total and canvas.width() == before
    assert (
        widget.run_button.native.mapTo(window, widget.run_button.native.rect().topLeft()) == run_at
    )
    print(f"canvas {before} px of a {total} px window ({before / total:.0%})")
    # an image set (its lists and check box shown) fits too
    for name in ("a", "b"):
        viewer.add_image(np.zeros((H, W), np.uint8), name=name)
    widget.select_images(["a", "b"])
    qtbot.wait(50)
    assert not widget.as_channels.native.isHidden()
    assert body.minimumSizeHint().width() <= widget.scroll_area.viewport().width()
    assert canvas.width() == before


def test_a_5d_layer_without_axis_labels_is_read_as_frames_and_says_so(make_sansa):
    from napari_sansa.napari.imageset import make_set_plan

    data = np.zeros((2, 3, 2, H, W), np.uint8)
    data[...] = make_image(3, (H, W), rgb=False)
    viewer, widget = make_sansa((data, {"name": "five"}, "image"))
    assert "12 frame(s)" in widget.axes.note.value
    assert "axes not named" in widget.axes.note.value
    clicks = viewer.add_points(np.array([[1, 2, 1, 20.0, 30.0]]), name="clicks")
    plan = make_set_plan([viewer.layers["five"]], [clicks])
    assert [r.frame for r in plan.parts[0].references] == [11]
    assert plan.parts[0].geometry.describe(11) == "frame 11 (index 1, 2, 1)"
    widget.axes.channel_axis.value = 1  # the person says: axis 1 holds channels
    plan = make_set_plan([viewer.layers["five"]], [clicks])
    assert plan.parts[0].geometry.n_frames == 4
    assert [r.frame for r in plan.parts[0].references] == [3]
    assert plan.parts[0].stack[0].shape == (H, W)


def test_channels_split_into_layers_are_used_as_the_channels_of_one_image(make_sansa, qtbot):
    data = tcyx()
    viewer, widget = make_sansa()
    viewer.add_image(data, channel_axis=1, name=["nuclei", "membrane"])
    nuclei, membrane = viewer.layers["nuclei"], viewer.layers["membrane"]
    assert nuclei.data.shape == (3, H, W)
    widget.select_images(["nuclei", "membrane"])
    assert not widget.as_channels.native.isHidden()
    widget.as_channels.value = True
    paint = widget.new_labels_layer()
    paint.data[0, 5:20, 5:30] = 1
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.status.value == "done: 3 frames"
    assert viewer.layers["nuclei [sansa]"].data.shape == (3, H, W)
    assert "membrane [sansa]" not in viewer.layers
    frame = widget.session.plan.parts[0].stack[1]
    assert frame.shape == (H, W, 3) and frame.dtype == np.float32
    np.testing.assert_allclose(frame[..., 2], 0)
    lo, hi = membrane.contrast_limits
    expected = np.clip((data[1, 1].astype(np.float32) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(frame[..., 1], expected, atol=1e-6)
