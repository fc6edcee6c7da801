"""The session behind the widget, on a real viewer (Xvfb): hand edits, references, Stop,
class ids of any size, saving through napari, and the memory-bank warning.

Tests drive the public session (``widget.session``) and the visible widgets.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from conftest import make_image
from napari_sansa.napari.worker import RunSettings

pytestmark = pytest.mark.gui

N, H, W = 4, 48, 64
TIMEOUT = 180_000  # ms


def frames(n=N):
    return np.stack([make_image(20 + i, (H, W), rgb=False) for i in range(n)])


def masks(n=N, spec=((0, 1, (8, 30, 10, 40)),), dtype=np.uint8):
    data = np.zeros((n, H, W), dtype)
    for frame, value, (r0, r1, c0, c1) in spec:
        data[frame, r0:r1, c0:c1] = value
    return data


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    return worker


# -- hand corrections are never overwritten ----------------------------------------------


def test_a_run_keeps_the_frames_edited_by_hand(make_sansa, qtbot, notifications):
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (masks(), {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    out = viewer.layers["cells [sansa]"]
    assert widget.edited_frames() == []
    # the person paints class 2 into the predicted frame 3, as with the brush
    out.brush_size = 9
    out.paint((3, 24, 32), 2)
    edited = np.array(out.data[3])
    assert (edited == 2).any()
    assert widget.edited_frames() == [3]
    before_1 = np.array(out.data[1])

    widget.threshold.value = 0.05  # a run that changes the predicted frames
    run(qtbot, widget)

    np.testing.assert_array_equal(out.data[3], edited)  # kept as the person left it
    assert not np.array_equal(out.data[1], before_1)  # the other frames were written
    assert widget.scores.kinds()[3] == "kept"
    assert "kept frame 3 as you edited by hand" in widget.status.value
    assert "'Use edited'" in widget.status.value
    assert any("kept frame 3" in m for m in notifications())
    assert widget.edited_frames() == [3]

    # they are ground truth: one click makes them references, and the next run keeps them
    widget.edited_button.native.click()
    refs = viewer.layers["cells [sansa references]"]
    assert refs in widget.prompt_layers.value
    assert (refs.data[3] == 2).sum() == (edited == 2).sum()
    assert not refs.data[[0, 1, 2]].any()
    run(qtbot, widget)
    assert widget.scores.kinds()[3] == "reference"


def test_an_erased_frame_counts_as_edited(make_sansa, qtbot):
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (masks(), {"name": "paint"}, "labels"),
    )
    widget.threshold.value = 0.05
    run(qtbot, widget)
    out = viewer.layers["cells [sansa]"]
    assert out.data[2].any()
    out.data[2] = 0  # "nothing here"
    run(qtbot, widget)
    assert not out.data[2].any()
    assert widget.scores.kinds()[2] == "kept"


# -- "Use current frame as reference" -----------------------------------------------------


def two_class_output(viewer):
    """A finished-looking output: classes 1 and 2 on frame 1, written by the session."""
    from napari_sansa.napari import edits

    out = viewer.layers["cells [sansa]"]
    plane = masks(spec=((1, 1, (5, 20, 5, 25)), (1, 2, (25, 45, 30, 60))))[1]
    out.data[1] = plane
    edits.record(out, 1, plane)
    return out


def two_class_run(make_sansa, qtbot):
    """A run with classes 1 and 2 on frame 0, then frame 1 shown as a two-class output."""
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (masks(spec=((0, 1, (5, 20, 5, 25)), (0, 2, (25, 45, 30, 60)))), {"name": "p"}, "labels"),
    )
    run(qtbot, widget)
    out = two_class_output(viewer)
    widget.go_to_frame(1)
    return viewer, widget, out


def test_the_current_frame_gives_only_the_classes_the_person_confirms(make_sansa, qtbot):
    viewer, widget, out = two_class_run(make_sansa, qtbot)
    # nothing edited yet: the default ("the classes I edited") refuses and says why
    assert widget.take.value == "edited"
    assert widget.use_current_frame_as_reference() is None
    assert "has no hand edits since SANSA wrote it" in widget.status.value
    assert "cells [sansa references]" not in viewer.layers
    # the person fixes class 1; class 2 stays as SANSA predicted it
    out.data[1, 5:20, 25:30] = 1
    refs = widget.use_current_frame_as_reference()
    assert refs is viewer.layers["cells [sansa references]"]
    np.testing.assert_array_equal(refs.data[1], np.where(out.data[1] == 1, 1, 0))
    assert "class 1 taken as a reference" in widget.status.value


def test_an_existing_reference_is_never_replaced_silently(make_sansa, qtbot, notifications):
    viewer, widget, out = two_class_run(make_sansa, qtbot)
    widget.take.value = "class"
    widget.class_id.value = 2
    refs = widget.use_current_frame_as_reference()
    array = refs.data
    np.testing.assert_array_equal(refs.data[1], np.where(out.data[1] == 2, 2, 0))
    # class 2 again, after another fix: refused, the reference stays as it was
    out.data[1, 40:45, 5:10] = 2
    kept = np.array(refs.data[1])
    assert widget.use_current_frame_as_reference() is None
    assert "already has a reference in 'cells [sansa references]' (class 2)" in notifications()[-1]
    np.testing.assert_array_equal(refs.data[1], kept)
    # class 1 adds to it; replace=True (for scripts) replaces class 2
    widget.class_id.value = 1
    assert widget.use_current_frame_as_reference() is refs
    assert set(np.unique(refs.data[1])) == {0, 1, 2}
    assert widget.use_current_frame_as_reference(classes=[2], replace=True) is refs
    np.testing.assert_array_equal(refs.data[1] == 2, out.data[1] == 2)
    assert refs.data is array  # updated in place, never a new array


# -- class ids of any size, and saving through napari ------------------------------------


def test_class_ids_above_65535_survive_the_widget_and_napari_save(make_sansa, qtbot, tmp_path):
    paint = masks(spec=((0, 70000, (8, 30, 10, 40)),), dtype=np.uint32)
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (paint, {"name": "paint"}, "labels"),
    )
    widget.threshold.value = 0.05
    run(qtbot, widget)
    out = viewer.layers["cells [sansa]"]
    assert out.data.dtype == np.uint32
    np.testing.assert_array_equal(out.data[0], paint[0])
    assert set(np.unique(out.data)) == {0, 70000}
    viewer.layers.selection = {out}
    (path,) = viewer.layers.save(str(tmp_path / "out.tif"), selected=True)
    back = tifffile.imread(path)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, out.data)
    with tifffile.TiffFile(path) as tif:  # napari-sansa's writer: compressed, named
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.shaped_metadata[0]["name"] == "cells [sansa]"


def test_napari_saves_labels_tiffs_with_the_plugins_writer(make_sansa, tmp_path):
    from napari.plugins.io import save_layers

    viewer, _widget = make_sansa((frames(), {"name": "cells"}, "image"))
    labels = viewer.add_labels(masks(), name="small")
    (path,) = save_layers(str(tmp_path / "small.tiff"), [labels])  # no plugin named
    back = tifffile.imread(path)
    assert back.dtype == np.uint8  # napari's own writer makes every Labels layer uint32
    np.testing.assert_array_equal(back, labels.data)


def test_a_reference_class_too_large_for_the_references_layer_is_refused(make_sansa, qtbot):
    paint = masks(spec=((0, 300, (8, 30, 10, 40)),), dtype=np.uint16)
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (paint, {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    refs = widget.new_labels_layer()  # made for class 1: uint8
    array = refs.data
    assert array.dtype == np.uint8
    widget.go_to_frame(0)
    widget.take.value = "all"
    assert widget.use_current_frame_as_reference() is None
    assert "class 300 does not fit" in widget.status.value
    assert refs.data is array and not array.any()


# -- Stop ---------------------------------------------------------------------------------


class GatedModels:
    """The session's model cache, whose model pauses before its ``after``-th frame until
    ``gate`` is set (to press Stop while the core holds frames already computed)."""

    def __init__(self, inner, gate: threading.Event, after: int):
        self.inner, self.gate, self.after = inner, gate, after
        self.calls: list[dict] = []  # the keyword arguments the worker passed to the core

    def has(self, settings):
        return self.inner.has(settings)

    def get(self, settings):
        model = self.inner.get(settings)
        gate, after, calls = self.gate, self.after, self.calls

        class Gated:
            def segment_iter(self, *args, **kwargs):
                calls.append((args, kwargs))
                for i, pred in enumerate(model.segment_iter(*args, **kwargs)):
                    if i == after:
                        assert gate.wait(120)
                    yield pred

        return Gated()


def test_stop_during_a_batch_writes_nothing_more(make_sansa, qtbot, shared_model_cache):
    n = 10
    viewer, widget = make_sansa(
        (frames(n=n), {"name": "cells"}, "image"),
        (masks(n=n), {"name": "paint"}, "labels"),
    )
    session = widget.session
    gate = threading.Event()
    session.models = GatedModels(shared_model_cache, gate, after=2)
    worker = session.run(
        viewer.layers["cells"],
        [viewer.layers["paint"]],
        widget.model_panel.settings(),
        RunSettings.make(batch_size=8),
    )
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: session.done >= 2, timeout=TIMEOUT)
    widget.stop_button.native.click()
    assert session.stopping and not widget.stop_button.enabled
    # Stop reaches the core itself (which then stops within one image, mid-batch too)
    ((args, kwargs),) = session.models.calls
    assert args[2].batch_size == 8 and kwargs["cancel"].is_set()  # the run's SegmentOptions
    out = viewer.layers["cells [sansa]"]
    at_stop = np.array(out.data)
    gate.set()  # the core hands over the frames it had already computed
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert session.done == 2
    np.testing.assert_array_equal(out.data, at_stop)
    assert widget.status.value == f"stopped: 2 of {n} frames done"
    assert sorted(widget.scores.frames()) == [0, 1]
    assert widget.run_button.enabled


# -- more than 7 references of a class ---------------------------------------------------


def test_more_than_seven_references_of_a_class_are_named(make_sansa, qtbot, notifications):
    n = 9
    paint = masks(n=n, spec=[(f, 1, (8, 30, 10, 40)) for f in range(8)])
    viewer, widget = make_sansa(
        (frames(n=n), {"name": "cells"}, "image"),
        (paint, {"name": "paint"}, "labels"),
    )
    run(qtbot, widget)
    (note,) = [m for m in notifications() if "reference frames" in m]
    assert "class 1 has 8 reference frames" in note
    assert "frame 1 reaches the other frames only through object pointers" in note
    assert "at most 7 reference frames per class" in note


# -- without Qt: a bare ViewerModel --------------------------------------------------------


def test_the_session_needs_no_qt_widgets():
    from napari.components import ViewerModel

    from napari_sansa.napari import edits
    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    image = viewer.add_image(frames(), name="cells")
    session = SansaSession(viewer)
    messages = []
    session.status.connect(messages.append)
    assert session.run(image, [], None) is None  # refused before any worker or layer
    assert "no prompt layers are selected" in messages[-1]
    assert [layer.name for layer in viewer.layers] == ["cells"]
    out = viewer.add_labels(
        np.zeros((N, H, W), np.uint8), name="cells [sansa]", metadata={"napari-sansa": "output"}
    )
    written = masks(spec=((1, 1, (5, 20, 5, 25)),))[1]
    out.data[1] = written
    edits.record(out, 1, written)
    assert session.edited_frames(image) == []
    out.data[1, 30:40, 30:40] = 3
    assert session.edited_frames(image) == [1]
    refs = session.promote(image, 1)
    np.testing.assert_array_equal(refs.data[1], np.where(out.data[1] == 3, 3, 0))
    assert session.edited_frames(image) == [1]  # class 1 was not taken: still the person's


def test_busy_answers_without_side_effects(notifications):
    """``busy()`` is a question: asked 48 times during a run (a polling loop) it posts
    nothing; Run pressed during the run says it once."""
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    image = viewer.add_image(frames(), name="cells")
    session = SansaSession(viewer)
    messages = []
    session.status.connect(messages.append)
    session.worker = object()  # a run going
    try:
        assert all(session.busy() for _ in range(48))
        assert messages == [] and notifications() == []
        assert session.run(image, [], None) is session.worker
        assert len(messages) == 1 and "already running" in messages[0]
        assert notifications() == messages
    finally:
        session.worker = None
    assert not session.busy()
