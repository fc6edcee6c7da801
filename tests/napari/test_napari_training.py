"""The widget's fine-tuning section on a real viewer (Xvfb), tiny random-weight model.

Runs a couple of steps at the model's own input size (no 640 resize) so that a run
takes seconds; awaited with qtbot.waitUntil. Public attributes only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_sansa as ns
from conftest import (
    CONFIG,
    TRAINING_SIZE,
    make_image,
    nan_from,
    scripted_validation,
    training_size_fixtures,
)

pytestmark = pytest.mark.gui


weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


N, H, W = 3, 48, 64
TIMEOUT = 180_000


def stack(n=N):
    return np.stack([make_image(30 + i, (H, W), rgb=False) for i in range(n)])


def annotations(frames, n=N, extra=None):
    """Class 1 boxes on ``frames`` (moving a little), class 2 where ``extra`` says."""
    data = np.zeros((n, H, W), np.uint8)
    for f in frames:
        data[f, 8 + f : 28 + f, 10 : 34 + f] = 1
    for f in extra or ():
        data[f, 34:44, 40:60] = 2
    return data


def open_training(make_sansa, labels, name="cells", steps=2, validation=0):
    viewer, widget = make_sansa(
        (stack(len(labels)), {"name": name}, "image"),
        (labels, {"name": f"{name} [sansa references]"}, "labels"),
    )
    widget.input_size.value = 0  # straight to the model's 256 px: fast
    panel = widget.training_panel
    panel.steps.value = steps
    panel.validation.value = validation
    return viewer, widget, panel


def wait_training(qtbot, panel):
    qtbot.waitUntil(lambda: panel.training.worker is None, timeout=TIMEOUT)


def adapters_of(model):
    return {k: v.detach().clone() for k, v in model.adapter_parameters()}


def test_fine_tuning_runs_switches_models_and_saves(
    make_sansa, qtbot, tmp_path, weights, shared_model_cache, notifications, monkeypatch
):
    scripted_validation(monkeypatch, [0.1, 0.2, 0.3])  # the held-out IoU rises
    # frames 0-2 annotated, frame 3 left for a run
    viewer, widget, panel = open_training(make_sansa, annotations([0, 1, 2], n=4), steps=2,
                                          validation=1)  # fmt: skip
    assert panel.annotations.value is viewer.layers["cells [sansa references]"]
    assert "0, 1, 2 (3 frame(s))" in panel.found.value
    widget.prompt_layers.value = [viewer.layers["cells [sansa references]"]]
    assert not panel.save_button.enabled and not panel.use_model.enabled
    source = widget.model_panel.settings()
    worker = panel.start()
    assert worker is not None, panel.status.value
    assert not panel.start_button.enabled and panel.stop_button.enabled
    wait_training(qtbot, panel)
    training = panel.training
    # step 0 (validation before training), then 2 steps; the curve got every point
    assert [s.step for s in training.history] == [0, 1, 2]
    assert [s for s, _ in panel.curve.train] == [1, 2]
    assert [s for s, _ in panel.curve.validation] == [0, 1, 2]
    assert panel.progress.value == panel.progress.max == 2
    assert "runs now use the tuned model" in panel.status.value
    assert ("kept the tuned adapters (step 2): held-out IoU 0.100 -> 0.300 (1 held-out frame)"
            in panel.status.value)  # fmt: skip
    assert panel.use_model.value == "tuned" and panel.save_button.enabled
    tuned = training.tuned.model
    original = training.original.model
    # the loaded model is untouched, the tuned one has other adapters
    before = adapters_of(original)
    assert any(not torch.equal(before[k], v) for k, v in adapters_of(tuned).items())
    # a run now uses the tuned model, from the session's model cache
    assert widget.training_panel.training.model_source(source) is training.tuned
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert shared_model_cache.get(training.tuned) is tuned
    # back to the loaded model: the same object (a load from disk would make a new one)
    panel.use_model.value = "original"
    held = training.model_source(source)
    assert held is training.original and held.model is original
    assert shared_model_cache.get(held) is original
    for k, v in adapters_of(original).items():
        assert torch.equal(before[k], v)
    # save the tuned adapters; they load back into the same tensors
    path = tmp_path / "tuned.pth"
    assert panel.save_adapters(path) == path
    sam2, _ = weights
    again = ns.load_model(config=CONFIG, sam2_checkpoint=sam2, adapter_checkpoint=path,
                          device="cpu", image_size=TRAINING_SIZE)  # fmt: skip
    loaded = adapters_of(again)
    for k, v in adapters_of(tuned).items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)
    # an existing file is not replaced without asking
    stamp = path.read_bytes()
    assert panel.save_adapters(path) is None
    assert "already exists" in panel.status.value
    assert path.read_bytes() == stamp
    assert not [s for s in notifications.severities() if s == "error"][:-1]


def test_stop_keeps_the_state_so_far(make_sansa, qtbot):
    viewer, widget, panel = open_training(make_sansa, annotations([0, 1, 2]), steps=200)
    panel.start()
    qtbot.waitUntil(lambda: len(panel.training.history) >= 1, timeout=TIMEOUT)
    panel.stop()
    assert not panel.stop_button.enabled
    wait_training(qtbot, panel)
    done = panel.training.tuned.steps
    assert 1 <= done < 200
    assert f"stopped at step {done}" in panel.status.value
    assert panel.use_model.value == "tuned"
    # Run while fine-tuning is refused, with a message (started again to check)
    panel.start()
    assert widget.run() is None
    assert "fine-tuning is running" in widget.status.value
    panel.stop()
    wait_training(qtbot, panel)
    panel.use_model.value = "original"


def test_a_tuning_that_made_it_worse_keeps_the_loaded_model_and_says_so(
    make_sansa, qtbot, notifications, monkeypatch
):
    scripted_validation(monkeypatch, [0.5, 0.2, 0.1])  # the held-out IoU falls
    viewer, widget, panel = open_training(make_sansa, annotations([0, 1, 2]), validation=1)
    source = widget.model_panel.settings()
    panel.start()
    wait_training(qtbot, panel)
    training = panel.training
    assert ("kept the original adapters: held-out IoU fell 0.500 -> 0.200 (the best tuned "
            "adapters; 1 held-out frame); runs still use the loaded model"
            in panel.status.value)  # fmt: skip
    assert training.tuned is None and training.using == "original"
    assert panel.use_model.value == "original" and not panel.save_button.enabled
    held = training.model_source(source)
    assert held is training.original and held.model is training.outcome.base
    assert notifications.severities()[-1] == "warning"


def test_unchecked_and_non_finite_runs_say_so(make_sansa, qtbot, monkeypatch):
    viewer, widget, panel = open_training(make_sansa, annotations([0, 1, 2]), validation=0)
    panel.start()
    wait_training(qtbot, panel)
    assert (
        "unchecked: no frame was held out (validation=0); the tuned adapters (step 2) are "
        "handed back without a check; runs now use the tuned model" in panel.status.value
    )
    first = panel.training.tuned
    # the loss becomes NaN at step 2: stopped there, nothing better than the start
    nan_from(monkeypatch, 2)
    panel.steps.value = 5
    panel.start()
    wait_training(qtbot, panel)
    assert (
        "the loss became nan at step 2: fine-tuning stopped there; unchecked" in panel.status.value
    )
    assert "the original adapters are handed back" in panel.status.value
    assert panel.training.tuned is first  # the earlier tuned model is still the one in use
    assert "runs still use the model fine-tuned in run 1" in panel.status.value
    # NaN at the first step: nothing changes
    nan_from(monkeypatch, 1)
    panel.start()
    wait_training(qtbot, panel)
    assert panel.status.value == (
        "the loss became nan at step 1: fine-tuning stopped there; the model is unchanged"
    )
    assert panel.training.tuned is first
    panel.use_model.value = "original"


def test_closing_the_widget_during_fine_tuning(make_sansa, qtbot):
    viewer, widget, panel = open_training(make_sansa, annotations([0, 1, 2]), steps=200)
    training = panel.training
    worker = panel.start()
    qtbot.waitUntil(lambda: len(training.history) >= 1, timeout=TIMEOUT)
    viewer.window.remove_dock_widget(widget.native)
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: training.worker is None, timeout=TIMEOUT)
    assert not worker.is_running
    assert len(training.history) < 200  # ended at the next step
    assert training.tuned is None  # nothing switched on a closed widget


@pytest.mark.parametrize(
    ("labels", "frames", "message"),
    [
        (annotations([1]), "", "at least two annotated frames"),
        (np.zeros((N, H, W), np.uint8), "", "at least two annotated frames"),
        (annotations([0, 1], extra=[1]), "", "class 2 is annotated only in frame 1"),
        (annotations([0, 1, 2]), "0, 2", None),  # fine: frames chosen by hand
        (annotations([0, 1]), "0, 2", "frame 2 of 'cells [sansa references]' hold no"),
        (annotations([0, 1]), "0-x", "is not a frame number"),
        (annotations([0, 1]), "0, 7", "outside the image's frames 0..2"),
    ],
)
def test_bad_training_input_gives_a_clear_message(
    make_sansa, qtbot, notifications, labels, frames, message
):
    viewer, widget, panel = open_training(make_sansa, labels, steps=1)
    refs = viewer.layers["cells [sansa references]"]
    painted = refs.data.copy()
    panel.frames.value = frames
    worker = panel.start()
    if message is None:
        assert worker is not None
        wait_training(qtbot, panel)
        assert panel.training.data.frames == (0, 2)
        panel.use_model.value = "original"
    else:
        assert worker is None
        assert message in panel.status.value
        assert message in notifications()[-1]
        assert panel.start_button.enabled
    np.testing.assert_array_equal(refs.data, painted)


def test_no_annotation_layer_says_what_to_paint(make_sansa, notifications):
    viewer, widget = make_sansa((stack(), {"name": "cells"}, "image"))
    panel = widget.training_panel
    assert panel.annotations.value is None
    assert panel.start() is None
    assert "cells [sansa references]" in panel.status.value
    # the references layer made later (e.g. by '+ labels') is chosen
    viewer.add_labels(annotations([0, 1]), name="cells [sansa references]")
    assert panel.annotations.value is viewer.layers["cells [sansa references]"]
    assert "(2 frame(s))" in panel.found.value
