"""The widget shaped like the work, on a real viewer (Xvfb): the main page at napari's
default window, one Stop and one status for everything, napari's shortcuts, settings
that stay, prompt layers that belong to their image, the frame column of a T x Z stack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_image, previews_idle

pytestmark = pytest.mark.gui

N, H, W = 4, 48, 64
TIMEOUT = 180_000


def frames(n=N, seed=10):
    return np.stack([make_image(seed + i, (H, W), rgb=False) for i in range(n)])


def mask_on(frame, n=N, box=(8, 30, 10, 40)):
    data = np.zeros((n, H, W), np.uint8)
    r0, r1, c0, c1 = box
    data[frame, r0:r1, c0:c1] = 1
    return data


def keys(text):
    """Keys as napari writes them in tooltips (symbols on some platforms)."""
    from napari.utils.interactions import Shortcut

    return str(Shortcut(text))


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


# -- the main page at napari's default window ---------------------------------------------


@pytest.mark.parametrize("images", ["stack", "set", "channels"])
@pytest.mark.parametrize("size", ["napari", (1089, 630)])
def test_the_main_page_fits_napari_s_default_window_beside_half_the_width(
    make_sansa, qtbot, size, images
):
    """napari opens at its layout's size hint (first start), 1089 x 630 on a 1600 x 1000
    screen with the old widget: the main page (images and prompts, run, review) needs no
    scrolling and the canvas keeps at least half of the window's width; also with an
    image set chosen (its 'with images' list shown) while the prompts are made, and after
    a run on that image set, with the confidence plot shown; and after a run on a 16-bit
    (T, C, Y, X) time-lapse (its channel axis and channels shown: it scrolled by 104 px,
    the two boxes each under its label)."""
    image, refs = frames(), mask_on(0)
    kwargs = {"name": "cells"}
    if images == "channels":  # a T x C 16-bit time-lapse with declared axes
        image = np.stack([image, image[::-1]], axis=1).astype(np.uint16) * 200
        kwargs["axis_labels"] = ("t", "c", "y", "x")
        refs = np.stack([refs, np.zeros_like(refs)], axis=1)  # the image's shape
    viewer, widget = make_sansa(
        (image, kwargs, "image"),
        (refs, {"name": "cells [sansa references]"}, "labels"),
    )
    viewer.add_points(np.zeros((0, 3)), name="cells [sansa points]")
    if images == "set":  # two more images of other sizes, taken with the first
        for name, shape in (("coffee", (40, 70)), ("camera", (90, 50))):
            viewer.add_image(np.random.default_rng(0).random(shape), name=name)
        widget.image.value = viewer.layers["cells"]
        widget.other_images.value = [viewer.layers["coffee"], viewer.layers["camera"]]
    window = viewer.window._qt_window
    window.show()
    window.resize(window.layout().sizeHint() if size == "napari" else __import__(
        "qtpy.QtCore", fromlist=["QSize"]).QSize(*size))  # fmt: skip
    qtbot.waitExposed(window)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(lambda: canvas.width() > 0)
    qtbot.wait(300)  # the docks settle
    layout = widget.native.layout()  # page buttons, pages, footer: the dock's height

    def settled():
        layout.activate()
        parts = (layout.itemAt(i).widget() for i in range(layout.count()))
        return sum(w.height() for w in parts if w is not None) == widget.native.height()

    qtbot.waitUntil(settled, timeout=5000)  # nothing else (no stretch napari adds) in it
    scroll = widget.scroll_area
    assert widget.pages["Label"] is scroll and scroll.isVisible()

    def assert_fits(when):
        body = scroll.widget()
        content = body.minimumSizeHint().height()
        if body.layout().hasHeightForWidth():
            content = max(content, body.layout().totalMinimumSize().height())
        viewport = scroll.viewport().height()
        print(f"{when}: window {window.width()} x {window.height()}: main page {content} px in "
              f"{viewport} px, canvas {canvas.width()} px "
              f"({canvas.width() / window.width():.0%})")  # fmt: skip
        assert content <= viewport, when
        assert not scroll.verticalScrollBar().isVisible(), when
        assert canvas.width() >= 0.5 * window.width(), when

    assert_fits("before a run")
    # the loop's controls are all on it: the prompt layers, Run, the review
    for control in (widget.image, widget.prompt_layers, widget.new_points_button, widget.mode,
                    widget.use_frame_button, widget.edited_button):  # fmt: skip
        assert control.native.isVisible(), control
    assert widget.scores.isVisible() and not widget.plot.isVisible()  # plot: once scores exist
    assert widget.run_button.native.isVisible() and widget.stop_button.native.isVisible()
    assert keys("Shift+R") in widget.run_button.native.toolTip()  # Run's tooltip: its key
    if images == "channels":
        assert widget.axes.channel_axis.native.isVisible()
        assert widget.axes.channels.native.isVisible()
    if images in ("set", "channels"):  # after a run, with the confidence plot shown
        widget.prompt_layers.value = [viewer.layers["cells [sansa references]"]]
        assert widget.run() is not None, widget.status.value
        wait_done(qtbot, widget)
        assert widget.status.value.startswith("done"), widget.status.value
        qtbot.waitUntil(widget.plot.isVisible, timeout=5000)
        qtbot.wait(300)
        qtbot.waitUntil(settled, timeout=5000)
        assert_fits(f"after a run on the {images}, with the plot shown")
        for control in (widget.prompt_layers, widget.use_frame_button, widget.scores,
                        widget.run_button):  # fmt: skip
            native = getattr(control, "native", control)
            assert native.isVisible(), control
    # one-line messages take the dock's width (cut with '…' only where it ends); first the
    # live preview the prompt layers asked for is left to finish (it says its own state)
    previews_idle(qtbot, widget, TIMEOUT)
    widget.preview_panel._show_state("")
    qtbot.wait(50)
    widget.preview_panel._show_state("preview of frame 1 of 'cells': class 1")
    qtbot.wait(50)
    assert widget.preview_panel.state.native.text().startswith("preview of")
    # the other pages are one click away
    assert list(widget.pages) == [
        "Label", "Model", "Options", "Folder", "Fine-tune", "Save", "Tracks"
    ]  # fmt: skip
    assert widget.page_buttons["Tracks"].isHidden()  # shown by a run with tracks
    widget.show_page("Fine-tune")
    qtbot.wait(50)
    assert widget.training_panel.start_button.native.isVisible()
    assert not widget.prompt_layers.native.isVisible()
    assert widget.run_button.native.isVisible()  # the footer stays
    # a long message wraps in the status, and is whole in its tooltip
    long = "a long message that says a lot " * 12
    widget.session.notify(long, popup=False)
    assert widget.status.native.wordWrap() and widget.status.native.toolTip() == long


def test_one_stop_one_progress_one_status_for_fine_tuning(make_sansa, qtbot):
    """Fine-tuning shows in the footer: its Stop is the footer's, its steps the footer's
    progress, and after Stop the status says how it ended (not 'fine-tuning is running',
    nor the run's last message)."""
    references = np.zeros((4, H, W), np.uint8)
    for f in range(3):
        references[f, 8 + f : 30, 10:40] = 1
    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (references, {"name": "cells [sansa references]"}, "labels"),
    )
    panel = widget.training_panel
    assert panel.stop_button is widget.stop_button and panel.progress is widget.progress
    assert panel.status is widget.status
    panel.steps.value = 200
    panel.validation.value = 0
    widget.session.notify("frame 3: class 1 taken as a reference", popup=False)
    assert panel.start() is not None
    assert widget.stop_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: len(panel.training.history) >= 1, timeout=TIMEOUT)
    assert widget.run() is None
    assert "fine-tuning is running" in widget.status.value
    widget.stop_button.native.click()  # the one Stop
    qtbot.waitUntil(lambda: panel.training.worker is None, timeout=TIMEOUT)
    status = widget.status.value
    assert "fine-tuning is running" not in status and "taken as a reference" not in status
    assert "stopped at step" in status, status
    assert widget.run_button.enabled and not widget.stop_button.enabled
    # the model line says that runs now use the tuned model
    assert "tuned" in widget.model_line.native.toolTip(), widget.model_line.native.toolTip()
    panel.use_model.value = "original"
    assert "tuned" not in widget.model_line.native.toolTip()


# -- napari's shortcuts ---------------------------------------------------------------------


def test_the_shortcuts_are_napari_s_and_act_on_the_widget(make_sansa, qtbot):
    from napari.components import ViewerModel
    from napari.utils.action_manager import action_manager

    from napari_sansa.napari._qt.shortcuts import ACTIONS

    viewer, widget = make_sansa(
        (frames(), {"name": "cells"}, "image"),
        (mask_on(0), {"name": "paint"}, "labels"),
    )
    for name, (_, default, _) in ACTIONS.items():
        full = f"napari-sansa:{name}"
        assert full in action_manager._actions  # listed in Preferences > Shortcuts
        assert action_manager._actions[full].keymapprovider is ViewerModel
        assert default in [str(k) for k in action_manager._shortcuts[full]]
    assert keys("Shift+Up") in widget.class_id.native.toolTip()
    # each one acts on this viewer's widget
    action_manager.trigger("napari-sansa:next_class")
    action_manager.trigger("napari-sansa:next_class")
    assert widget.class_id.value == 3
    action_manager.trigger("napari-sansa:previous_class")
    assert widget.class_id.value == 2
    action_manager.trigger("napari-sansa:negative_click")
    assert widget.polarity.value == "negative"
    action_manager.trigger("napari-sansa:positive_click")
    assert widget.polarity.value == "positive"
    assert keys("Shift+C") in widget.preview_panel.clear_button.native.toolTip()
    active = viewer.layers.selection.active
    action_manager.trigger("napari-sansa:fix_clicks")  # the fix layer of the image
    assert viewer.layers.selection.active.name.endswith("[sansa fix]")
    viewer.layers.selection.active = active  # (a Points layer's own keys win while active)
    # the keys themselves, through napari's key handler (as a key press on the canvas)
    qt_viewer = viewer.window._qt_viewer
    handler = getattr(qt_viewer.canvas, "_key_map_handler", None) or qt_viewer._key_map_handler

    def press(key):
        handler.press_key(key)
        handler.release_key(key)

    press("Shift+Up")
    press("Shift+O")
    assert widget.class_id.value == 3 and widget.polarity.value == "negative"
    press("Shift+I")
    assert widget.polarity.value == "positive"
    widget.class_id.value = 1
    action_manager.trigger("napari-sansa:run")
    assert widget.worker is not None
    action_manager.trigger("napari-sansa:stop")
    assert widget.session.stopping
    wait_done(qtbot, widget)
    action_manager.trigger("napari-sansa:run")
    wait_done(qtbot, widget)
    assert not widget.plot.isHidden()  # the confidence plot appears with the scores
    # the next least certain frame: predicted frames in the order of their lowest score
    lows = {f: low for f, (low, kind) in widget.plot._values.items() if kind == "predicted"}
    order = sorted(lows, key=lambda f: (lows[f], f))
    seen = []
    for _ in order:
        action_manager.trigger("napari-sansa:next_uncertain_frame")
        seen.append(widget.current_frame())
    assert seen == order
    # the shown frame taken as a reference
    frame = widget.current_frame()
    assert frame == order[-1]
    output = widget.output_layer()
    output.data[frame][5:9, 5:9] = 1
    output.refresh()
    widget.take.value = "all"
    action_manager.trigger("napari-sansa:use_shown_frame")
    assert viewer.layers["cells [sansa references]"].data[frame].any(), widget.status.value
    # rebinding (as napari's preferences do) changes the tooltip
    action_manager.unbind_shortcut("napari-sansa:run")
    action_manager.bind_shortcut("napari-sansa:run", "Ctrl+Shift+J")
    try:
        assert keys("Ctrl+Shift+J") in widget.run_button.native.toolTip()
    finally:
        action_manager.unbind_shortcut("napari-sansa:run")
        action_manager.bind_shortcut("napari-sansa:run", ACTIONS["run"][1])


# -- settings that stay ---------------------------------------------------------------------


def test_restore_all_keybindings_in_napari_s_preferences_gives_our_keys_back(make_sansa, qtbot):
    """Preferences > Shortcuts > 'Restore All Keybindings' (napari's ShortcutEditor, past
    its confirmation): actions rebound or unbound there get their default keys back."""
    from napari._qt.widgets.qt_keyboard_settings import ShortcutEditor
    from napari.settings import get_settings
    from napari.utils.action_manager import action_manager

    from napari_sansa.napari._qt.shortcuts import ACTIONS

    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    editor = ShortcutEditor()
    qtbot.addWidget(editor)
    # rebound and unbound as the editor's table does (the action manager and the settings)
    changed = {"napari-sansa:run": ["Shift+Q"], "napari-sansa:stop": []}
    for action, shortcuts in changed.items():
        action_manager.unbind_shortcut(action)
        for shortcut in shortcuts:
            action_manager.bind_shortcut(action, shortcut)
    get_settings().shortcuts.shortcuts = {**get_settings().shortcuts.shortcuts, **changed}
    assert [str(k) for k in action_manager._shortcuts["napari-sansa:run"]] == ["Shift+Q"]
    assert keys("Shift+Q") in widget.run_button.native.toolTip()
    editor._reset_shortcuts()  # 'Restore All Keybindings'
    saved = get_settings().shortcuts.shortcuts
    for name, (_, default, _) in ACTIONS.items():
        full = f"napari-sansa:{name}"
        assert [str(k) for k in action_manager._shortcuts[full]] == [default], full
        assert [str(k) for k in saved[full]] == [default], full
    assert keys("Shift+R") in widget.run_button.native.toolTip()
    assert keys("Shift+S") in widget.stop_button.native.toolTip()
    action_manager.trigger("napari-sansa:next_class")  # and they act on the widget
    assert widget.class_id.value == 2


def test_settings_set_in_one_viewer_are_there_in_a_new_one(
    make_sansa, sansa_env, monkeypatch, tmp_path
):
    from napari_sansa.napari.settings_store import settings_path

    sam2, adapters = sansa_env
    for name in ("CONFIG", "SAM2_CHECKPOINT", "ADAPTER_CHECKPOINT", "IMAGE_SIZE"):
        monkeypatch.delenv(f"NAPARI_SANSA_{name}")  # as a person starts napari
    viewer, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    assert widget.model_panel.model.value == "sansa-universal"  # the default
    panel = widget.model_panel
    panel.model.value = "custom files"
    panel.config.value = "sam2_hiera_t"
    panel.sam2_file.value = sam2
    panel.adapter_file.value = adapters
    panel.image_size.value = 256
    widget.mode.value = "sequential"
    widget.threshold.value = 0.3
    widget.input_size.value = 0
    widget.large.tile_size.value = 512
    widget.large.follow.value = True
    widget.folder.input_folder.value = tmp_path / "in"
    widget.folder.output_folder.value = tmp_path / "out"
    widget.training_panel.steps.value = 40
    saved = json.loads(settings_path().read_text())["values"]
    assert saved["sam2_weights"] == str(sam2) and saved["threshold"] == 0.3
    viewer.close()
    _, again = make_sansa((frames(), {"name": "cells"}, "image"))
    p = again.model_panel
    assert p.model.value == "custom files" and p.config.value == "sam2_hiera_t"
    assert str(p.sam2_file.value) == str(sam2) and str(p.adapter_file.value) == str(adapters)
    assert p.image_size.value == 256
    assert again.mode.value == "sequential" and again.threshold.value == pytest.approx(0.3)
    assert again.input_size.value == 0 and again.large.tile_size.value == 512
    assert again.large.follow.value
    assert str(again.folder.input_folder.value) == str(tmp_path / "in")
    assert str(again.folder.output_folder.value) == str(tmp_path / "out")
    assert again.training_panel.steps.value == 40
    assert "adapters" in again.model_line.native.toolTip()  # the model the runs will use
    # back to the defaults: the controls, and nothing remembered
    again.reset_button.native.click()
    assert again.model_panel.model.value == "sansa-universal"
    assert again.mode.value == "independent" and again.threshold.value == pytest.approx(0.5)
    assert again.model_panel.image_size.value == 0
    assert not settings_path().exists()


@pytest.mark.parametrize(
    "text",
    ["{not json", '["a list"]', json.dumps({"values": {
        "threshold": "high", "mode": "sideways", "probability_maps": 3, "halo": -5,
        "unknown": 1, "tuning_steps": None}})],
)  # fmt: skip
def test_a_damaged_settings_file_is_ignored_with_a_warning(
    make_sansa, sansa_env, text, notifications
):
    from napari_sansa.napari.settings_store import settings_path

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _, widget = make_sansa((frames(), {"name": "cells"}, "image"))  # no crash
    warned = [m for m in notifications() if m.startswith("napari-sansa:")]
    assert warned, notifications()
    assert widget.mode.value == "independent" and widget.threshold.value == pytest.approx(0.5)
    assert widget.large.halo.value == -1 and not widget.probabilities.value
    # the damaged file is kept, byte for byte, and the warning says where (once)
    kept = sorted(path.parent.glob(f"{path.name}.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text() == text
    said = [m for m in warned if "kept as" in m]
    assert len(said) == 1 and str(kept[0]) in said[0], warned
    # another dock opened before anything was saved keeps no second copy
    make_sansa((frames(), {"name": "cells"}, "image"))
    assert sorted(path.parent.glob(f"{path.name}.damaged-*")) == kept
    assert len([m for m in notifications() if "kept as" in m]) == 1
    # the next change writes a good file; the kept one stays as it was
    widget.threshold.value = 0.4
    assert json.loads(path.read_text())["values"]["threshold"] == 0.4
    assert kept[0].read_text() == text


def test_a_damaged_settings_file_that_cannot_be_kept_is_not_saved_over(
    make_sansa, sansa_env, notifications, monkeypatch
):
    from napari_sansa.napari import settings_store

    def cannot(path, move):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(settings_store, "keep_damaged", cannot)
    path = settings_store.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    _, widget = make_sansa((frames(), {"name": "cells"}, "image"))
    assert any("could not be kept (read-only folder)" in m for m in notifications())
    widget.threshold.value = 0.4
    assert path.read_text() == "{not json"  # nothing saved over it
    widget.settings_store.reset()  # asked for: the file goes, saving starts again
    assert not path.exists()
    widget.threshold.value = 0.3
    assert json.loads(path.read_text())["values"]["threshold"] == 0.3


# -- prompt layers belong to their image ----------------------------------------------------


def test_a_points_layer_made_for_one_image_is_not_used_for_another(make_sansa, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget = make_sansa(
        (frames(seed=1), {"name": "left"}, "image"),
        (frames(seed=5), {"name": "right"}, "image"),
    )
    widget.image.value = viewer.layers["left"]
    widget.polarity.value = "negative"
    points = widget.new_points_layer()
    points.add(np.array([[0, 20, 20]]))  # a negative click only
    widget.polarity.value = "positive"
    assert widget.prompt_layers.value == [points]
    box = widget.prompt_layers.native

    def ticked():
        return {box.item(i).text(): box.item(i).checkState() == Qt.CheckState.Checked
                for i in range(box.count())}  # fmt: skip

    # shown by its distinguishing part, ticked with a check box
    assert ticked() == {"[sansa points]": True}
    widget.image.value = viewer.layers["right"]
    assert widget.prompt_layers.value == []
    assert ticked() == {"left [sansa points] (points)": False}
    # the right image's own prompts: its run is not blocked by the left one's click
    refs = widget.new_labels_layer()
    refs.data[0, 8:30, 10:40] = 1
    refs.refresh()
    assert widget.prompt_layers.value == [refs]
    assert ticked() == {"left [sansa points] (points)": False, "[sansa references]": True}
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.output_layer().data[1:].any()
    # a click on a box ticks the layer (the selection follows)
    item = next(box.item(i) for i in range(box.count()) if "left" in box.item(i).text())
    item.setCheckState(Qt.CheckState.Checked)
    assert points in widget.prompt_layers.value
    widget.image.value = viewer.layers["left"]
    assert widget.prompt_layers.value == [points]


# -- the frame column of a T x Z stack ------------------------------------------------------


def test_the_results_table_names_the_frames_of_a_t_by_z_stack(make_sansa, qtbot):
    stack = np.stack([frames(n=3, seed=s) for s in (1, 2)])  # (T=2, Z=3, Y, X)
    refs = np.zeros(stack.shape, np.uint8)
    refs[0, 0, 8:30, 10:40] = 1
    viewer, widget = make_sansa(
        (stack, {"name": "tz", "axis_labels": ("t", "z", "y", "x")}, "image"),
        (refs, {"name": "tz [sansa references]"}, "labels"),
    )
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    table = widget.scores
    shown = {table.item(r, 0).text() for r in range(table.rowCount())}
    assert shown == {f"t={t}, z={z}" for t in range(2) for z in range(3)}
    assert sorted(table.frames()) == list(range(6))  # the keys stay the flat frames
    table.sortByColumn(0, Qt_ascending())
    assert table.frames() == list(range(6))  # sorted by frame, not by text


def Qt_ascending():  # noqa: N802
    from qtpy.QtCore import Qt

    return Qt.SortOrder.AscendingOrder


def test_a_long_status_ends_with_its_last_whole_word_that_fits():
    from napari_sansa.napari._qt.layout import fitting_words

    text = "the Labels layer 'paint' has shape (4, 48, 64), but masks need (3, 64, 64)"
    assert fitting_words(text, lambda t: len(t) <= 30) == "the Labels layer 'paint' has…"
    assert (
        fitting_words(text, lambda t: len(t) <= 47)
        == "the Labels layer 'paint' has shape (4, 48, 64)…"
    )
    assert fitting_words(text, lambda t: True) == text + "…"
