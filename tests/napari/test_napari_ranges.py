"""Frame ranges per axis: the frames labelled are the product of one range per frame axis
(plan, widget and session on a real viewer under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image

pytestmark = pytest.mark.gui

TIMEOUT = 180_000
H, W = 40, 48
T, Z = 3, 4


def tz_stack():
    return np.stack(
        [np.stack([make_image(10 * t + z, (H, W), rgb=False) for z in range(Z)]) for t in range(T)]
    )


def tz_layer():
    from napari.layers import Image

    return Image(tz_stack(), name="tz", axis_labels=("t", "z", "y", "x"))


def frame(t, z):
    return t * Z + z


def test_ranges_per_axis_give_the_product_of_the_ranges():
    from napari_sansa.napari.geometry import image_geometry
    from napari_sansa.napari.plan import frames_in_range

    g = image_geometry(tz_layer())
    both = [frame(t, z) for t in (1, 2) for z in (1, 2)]
    assert frames_in_range(g, {"t": (1, 2), "z": (1, 2)}) == tuple(both)
    assert frames_in_range(g, {0: (1, 2), 1: (1, 2)}) == tuple(both)
    assert frames_in_range(g, [(1, 2), (1, 2)]) == tuple(both)
    assert frames_in_range(g, {"z": (3, 3)}) == tuple(frame(t, 3) for t in range(T))  # t: all
    assert frames_in_range(g, None) == tuple(range(T * Z))
    # a flat (first, last) of frame numbers still works (scripts written for 3D stacks)
    assert frames_in_range(g, (2, 5)) == (2, 3, 4, 5)
    assert frames_in_range(g, (np.int64(10), 99)) == (10, 11)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"z": (0, 4)}, r"the range 0\.\.4 of z in 'tz' is outside the axis: it has z 0\.\.3"),
        ({"t": (-1, 1)}, r"the range -1\.\.1 of t in 'tz' is outside the axis"),
        ({"t": (2, 1)}, r"the range 2\.\.1 of t in 'tz' is empty"),
        ({"c": (0, 1)}, r"'c' is not a frame axis of 'tz' \(its frame axes: t \(3\), z \(4\)\)"),
        ([(0, 1)], r"'tz' has 2 frame axes, but 1 frame ranges were given"),
    ],
)
def test_a_range_outside_its_axis_is_refused_with_what_to_change(ranges, message):
    from napari.layers import Points

    from napari_sansa.napari.geometry import PromptError
    from napari_sansa.napari.plan import make_plan

    with pytest.raises(PromptError, match=message):
        make_plan(tz_layer(), [Points(np.array([[0, 0, 10, 10]]))], ranges)


def test_nothing_left_in_the_ranges_says_where():
    from napari.layers import Points

    from napari_sansa.napari.geometry import PromptError
    from napari_sansa.napari.plan import make_plan

    points = Points(np.array([[1, 2, 10, 10]]))
    with pytest.raises(PromptError, match=r"every frame in t 1\.\.1, z 2\.\.2 of 'tz' has prompts"):
        make_plan(tz_layer(), [points], {"t": (1, 1), "z": (2, 2)})


def test_the_widget_shows_one_range_per_frame_axis_and_labels_only_those_frames(make_sansa, qtbot):
    viewer, widget = make_sansa(
        (tz_stack(), {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image"),
        (tz_stack()[0], {"name": "z only", "axis_labels": ("z", "y", "x")}, "image"),
    )
    ranges = widget.axes.ranges

    def shown():
        return [
            (name.value, first.value, last.value, last.max)
            for row, name, first, last in ranges.rows
            if not row.native.isHidden()
        ]

    widget.image.value = viewer.layers["z only"]  # one frame axis: one range, as before
    assert shown() == [("frames", 0, Z - 1, Z - 1)]
    assert (widget.first_frame.value, widget.last_frame.value) == (0, Z - 1)
    widget.image.value = viewer.layers["tz"]
    assert shown() == [("t", 0, T - 1, T - 1), ("z", 0, Z - 1, Z - 1)]
    paint = widget.new_labels_layer()
    paint.data[0, 0, 5:20, 5:30] = 1
    ranges.set(0, 1, 2)  # t 1..2
    ranges.set(1, 1, 2)  # z 1..2
    before = tz_stack()
    assert widget.run() is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    inside = [frame(t, z) for t in (1, 2) for z in (1, 2)]
    assert widget.session.plan.parts[0].targets == tuple(inside)
    assert sorted(widget.scores.frames()) == [0, *inside]  # the reference, then the range
    assert widget.status.value == "done: 5 frames"
    out = viewer.layers["tz [sansa]"].data
    for t in range(T):
        for z in range(Z):
            if frame(t, z) not in (0, *inside):
                assert not out[t, z].any(), (t, z)  # outside the ranges: nothing written
    np.testing.assert_array_equal(out[0, 0], paint.data[0, 0])
    np.testing.assert_array_equal(viewer.layers["tz"].data, before)


def test_a_script_range_outside_the_axis_is_refused_and_makes_no_layer(make_sansa, notifications):
    viewer, widget = make_sansa(
        (tz_stack(), {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image")
    )
    paint = widget.new_labels_layer()
    paint.data[0, 0, 5:20, 5:30] = 1
    settings = widget.model_panel.settings()
    worker = widget.session.run(viewer.layers["tz"], [paint], settings, None, {"z": (2, 9)})
    assert worker is None
    assert "the range 2..9 of z in 'tz' is outside the axis: it has z 0..3" in notifications()[-1]
    assert "tz [sansa]" not in viewer.layers


def test_sequential_mode_runs_along_z_within_each_t_inside_the_ranges(
    make_sansa, qtbot, monkeypatch
):
    from napari_sansa.core.model import SansaModel

    viewer, widget = make_sansa(
        (tz_stack(), {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image")
    )
    paint = widget.new_labels_layer()
    paint.data[0, 0, 5:20, 5:30] = 1
    runs = []
    real = SansaModel.segment_iter

    def spy(self, references, targets, options=None, **kw):
        runs.append([targets.frame_number(i) for i in range(len(targets))])
        return real(self, references, targets, options, **kw)

    monkeypatch.setattr(SansaModel, "segment_iter", spy)
    widget.mode.value = "sequential"
    assert widget.axes.sequential_axis.value == "z"
    widget.axes.ranges.set(1, 1, 3)  # z 1..3, every t
    assert widget.run() is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    # one run per time point, each along z from 1 to 3: never across a time point
    assert runs == [[frame(t, z) for z in (1, 2, 3)] for t in range(T)]
    runs.clear()
    widget.axes.sequential_axis.value = "t"  # for each z
    widget.axes.ranges.set(0, 1, 2)
    assert widget.run() is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert runs == [[frame(t, z) for t in (1, 2)] for z in (1, 2, 3)]
