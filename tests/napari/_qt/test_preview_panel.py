"""The dock's preview switch and click fixes on a real viewer (Xvfb), with napari's worker:
the preview of the frame shown is what the run then writes there, the frame is prepared
in the background, a prompt layer removed while its preview is computed, and a click on
a labelled frame redraws it undoably."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image, previews_idle

pytestmark = pytest.mark.gui

N, H, W = 3, 48, 64
TIMEOUT = 120_000  # ms


def frames(n=N, seed=60):
    return np.stack([make_image(seed + i, (H, W), rgb=False) for i in range(n)])


def add_clicks(viewer, widget, frame, clicks):
    widget.go_to_frame(frame)
    layer = widget.new_points_layer()
    for r, c in clicks:
        layer.add([frame, r, c])
    return layer


def test_the_preview_follows_the_clicks_and_is_what_the_run_writes(make_sansa, qtbot):
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    points = add_clicks(viewer, widget, 1, [(20, 20), (24, 30)])
    previews_idle(qtbot, widget, TIMEOUT)
    preview = viewer.layers["cells [sansa preview]"]
    shown = np.array(preview.data[1])
    assert shown.any() and not preview.data[0].any()
    assert viewer.layers.selection.active is points  # the clicks go on where they were
    assert ("cells", 1) in widget.session.previews.prepared
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    np.testing.assert_array_equal(viewer.layers["cells [sansa]"].data[1], shown)
    # a removed click updates the preview
    points.data = points.data[:1]
    previews_idle(qtbot, widget, TIMEOUT)
    assert widget.preview_panel.message == "preview of frame 1: class 1"
    assert widget.status.value == "done: 3 frames"  # the run's outcome stays in the status


def test_the_active_prompt_layer_prepares_the_shown_frame(make_sansa, qtbot):
    viewer, widget = make_sansa((frames(seed=70), {"name": "cells"}, "image"))
    messages = []
    widget.session.previews.status.connect(messages.append)
    widget.go_to_frame(2)
    widget.new_points_layer()  # active, no clicks yet
    previews_idle(qtbot, widget, TIMEOUT)
    assert any("preparing frame 2..." in m for m in messages), messages
    assert "frame 2 ready: its prompts preview at once" in messages, messages
    assert ("cells", 2) in widget.session.previews.prepared
    preview = viewer.layers["cells [sansa preview]"]  # made ready, empty: nothing to show yet
    assert not preview.data.any()


def test_the_switch_turns_previews_off_and_on(make_sansa, qtbot):
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    widget.preview_panel.switch.value = False
    add_clicks(viewer, widget, 0, [(20, 20)])
    previews_idle(qtbot, widget, TIMEOUT)
    assert "cells [sansa preview]" not in viewer.layers
    widget.preview_panel.switch.value = True
    previews_idle(qtbot, widget, TIMEOUT)
    assert viewer.layers["cells [sansa preview]"].data[0].any()
    widget.preview_panel.switch.value = False
    assert not viewer.layers["cells [sansa preview]"].visible


def test_a_prompt_layer_removed_while_its_preview_is_computed(make_sansa, qtbot):
    viewer, widget = make_sansa((frames(seed=80), {"name": "cells"}, "image"))
    keep = add_clicks(viewer, widget, 1, [(30, 40)])
    previews_idle(qtbot, widget, TIMEOUT)
    kept = np.array(keep.data)
    doomed = add_clicks(viewer, widget, 1, [(10, 10), (12, 14)])
    widget.preview_panel.update()  # its preview starts now ...
    assert widget.session.previews.worker is not None
    viewer.layers.remove(doomed)  # ... and the layer goes while it is computed
    previews_idle(qtbot, widget, TIMEOUT)
    preview = np.array(viewer.layers["cells [sansa preview]"].data[1])
    from napari_sansa.napari.layers import prompts_from_layers

    only = prompts_from_layers(viewer.layers["cells"], [keep])
    model = widget.session.models.get(widget.model_panel.settings())
    import napari_sansa as ns

    expected = model.prepare_references(
        [ns.Reference(viewer.layers["cells"].data[1], only[0].prompts)]
    ).decoded[0]
    np.testing.assert_array_equal(preview, expected.labels)
    np.testing.assert_array_equal(keep.data, kept)  # the person's layer is unchanged


def _labelled_on_frame_2(make_sansa, qtbot):
    """(viewer, widget, the labels layer, its data) after a run on the frames with clicks
    of class 1 on frame 0, the viewer on frame 2 (for a fix)."""
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    add_clicks(viewer, widget, 0, [(20, 20), (24, 30)])
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    out = viewer.layers["cells [sansa]"]
    before = np.array(out.data)
    widget.go_to_frame(2)
    return viewer, widget, out, before


def test_a_click_fixes_a_labelled_frame_and_undo_takes_it_back(make_sansa, qtbot):
    viewer, widget, out, before = _labelled_on_frame_2(make_sansa, qtbot)
    fix = widget.preview_panel.new_fix_layer()
    assert viewer.layers.selection.active is fix
    fix.add([2, 30, 40])
    previews_idle(qtbot, widget, TIMEOUT)
    assert widget.session.previews.last.job.kind in ("fix", "preview", "prepare")
    qtbot.waitUntil(lambda: "fixed class 1 on frame 2" in widget.status.value, timeout=TIMEOUT)
    assert not np.array_equal(out.data[2], before[2])
    assert widget.edited_frames() == [2]
    out.undo()
    np.testing.assert_array_equal(out.data, before)
    # 'clear class' takes the fix clicks (and prompts) of the class off the shown frame
    assert widget.preview_panel.clear_class() == 1
    assert len(fix.data) == 0


def test_a_box_fixes_a_labelled_frame_as_sam2_decodes_it(make_sansa, qtbot):
    from napari.utils.action_manager import action_manager

    from napari_sansa.core.preview import redraw_mask

    viewer, widget, out, before = _labelled_on_frame_2(make_sansa, qtbot)
    action_manager.trigger("napari-sansa:fix_box")  # Shift+B: the image's box layer
    boxes = viewer.layers["cells [sansa fix box]"]
    assert viewer.layers.selection.active is boxes and boxes.mode == "add_rectangle"
    assert boxes not in widget.prompt_layers.choices  # a fix makes no reference
    boxes.add_rectangles(np.array([[2, 10, 12], [2, 10, 50], [2, 45, 50], [2, 45, 12]]))
    previews_idle(qtbot, widget, TIMEOUT)
    qtbot.waitUntil(lambda: "fixed class 1 on frame 2" in widget.status.value, timeout=TIMEOUT)
    model = widget.session.models.get(widget.model_panel.settings())
    mask, _ = redraw_mask(
        model, viewer.layers["cells"].data[2], widget.run_settings().segment,
        box=(10, 12, 45, 50), mask=before[2] == 1,
    )  # fmt: skip
    expected = before[2].copy()
    expected[(expected == 1) & ~mask] = 0  # the class's pixels outside the new mask go
    expected[mask & ((expected == 0) | (expected == 1))] = 1  # it takes background pixels
    np.testing.assert_array_equal(out.data[2], expected)
    np.testing.assert_array_equal(out.data[[0, 1]], before[[0, 1]])
    assert widget.edited_frames() == [2]
    # a box on another frame than the one shown is refused, nothing changes
    widget.go_to_frame(1)
    boxes.add_rectangles(np.array([[2, 10, 12], [2, 10, 50], [2, 45, 50], [2, 45, 12]]))
    previews_idle(qtbot, widget, TIMEOUT)
    np.testing.assert_array_equal(out.data[1], before[1])
    assert "the last box is not on frame 1" in widget.status.value


def test_a_click_on_a_frame_still_being_prepared_waits_for_it(make_sansa, qtbot):
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    add_clicks(viewer, widget, 0, [(20, 20)])
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    previews_idle(qtbot, widget, TIMEOUT)
    out = viewer.layers["cells [sansa]"]
    before = np.array(out.data)
    image = viewer.layers["cells"]
    image.data[2] = 255 - image.data[2]  # new pixels: frame 2 must be encoded again
    image.refresh()
    previews = widget.session.previews
    settings, source = widget.run_settings(), widget.model_panel.settings()
    assert previews.prepare(image, source, settings, [(0, 2)]) is not None
    assert previews.current is not None and previews.current.kind == "prepare"
    assert previews.fix(image, 2, 1, source, settings, points=[[30, 40]]) is not None
    assert "is being prepared: the click is applied" in widget.status.value
    previews_idle(qtbot, widget, TIMEOUT)
    assert previews.last.job.kind == "fix" and previews.last.error is None
    assert not np.array_equal(out.data[2], before[2])
    np.testing.assert_array_equal(out.data[[0, 1]], before[[0, 1]])
