"""Fine-tuning never hands back a worse model silently: the held-out IoU picks the adapters
(the starting ones included) and the run says which it kept; a non-finite loss stops it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from training_data import GRID, ellipse_frame

import napari_sansa as ns
from conftest import nan_from, scripted_validation, training_size_fixtures
from napari_sansa.core.training import TrainingError

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.fixture(scope="module")
def data():
    return [ellipse_frame(s) for s in range(4)]


def _adapters(model):
    return {k: v.detach().clone() for k, v in model.adapter_parameters()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _run(model, data, **kw):
    kw = {"steps": 3, "batch_size": 1, "input_size": GRID, "seed": 0, "lr": 1e-3,
          "validate_every": 1, **kw}  # fmt: skip
    return ns.finetune_iter(model, data, **kw)


def test_a_run_that_lowers_the_held_out_iou_hands_back_the_starting_adapters(
    model, data, monkeypatch
):
    # the loss falls while the IoU falls (as in issue 18): the loss is no guard
    scripted_validation(monkeypatch, [0.14, 0.10, 0.07, 0.04], [1.04, 1.0, 0.9, 0.8])
    with pytest.warns(UserWarning, match="kept the original adapters: held-out IoU fell "
                      r"0\.140 -> 0\.100"):  # fmt: skip
        tuned = ns.finetune(model, data, steps=3, batch_size=1, input_size=GRID, lr=1e-3,
                            validate_every=1)  # fmt: skip
    assert _same(_adapters(model), _adapters(tuned))
    report = tuned.finetune_report
    assert report.kept == "original" and report.checked and report.step == 0
    assert (report.iou_before, report.iou_after) == (0.14, 0.10)
    assert report.steps_done == 3 and len(report.held_out) == 1


def test_a_run_that_raises_the_held_out_iou_keeps_the_best_tuned_adapters(model, data, monkeypatch):
    scripted_validation(monkeypatch, [0.10, 0.30, 0.41, 0.41], [1.0, 1.2, 1.3, 0.5])
    run = _run(model, data)
    stats = list(run)
    assert [s.best_step for s in stats] == [0, 1, 2, 2]  # a tie keeps the earlier
    tuned = run.result()
    assert _same(_adapters(tuned), run.best)
    assert not _same(_adapters(tuned), _adapters(model))
    report = run.outcome
    assert report is tuned.finetune_report
    assert (report.kept, report.step, report.iou_before, report.iou_after) == (
        "tuned", 2, 0.10, 0.41)  # fmt: skip
    assert str(report) == (
        "kept the tuned adapters (step 2): held-out IoU 0.100 -> 0.410 (1 held-out frame)"
    )
    assert report.as_dict()["message"] == str(report)


def test_a_stop_between_validations_measures_the_last_adapters(model, data, monkeypatch):
    calls = scripted_validation(monkeypatch, [0.2, 0.5])
    run = _run(model, data, steps=10, validate_every=5)
    for _ in range(4):  # step 0 (validation) and steps 1..3: stopped before step 5
        next(run)
    run.result()
    assert calls == [0, 3]  # step 3 was measured by result()
    assert (run.outcome.kept, run.outcome.step, run.outcome.iou_after) == ("tuned", 3, 0.5)


def test_result_last_still_hands_back_the_last_adapters(model, data, monkeypatch):
    scripted_validation(monkeypatch, [0.5, 0.2, 0.1])
    run = _run(model, data, steps=2)
    list(run)
    last = _adapters(run.result("last"))
    assert _same(last, dict(run._adapter_state()))
    assert run.outcome.which == "last" and run.outcome.kept == "tuned"
    assert "the last tuned adapters, as asked (step 2)" in str(run.outcome)


def test_three_frames_hold_one_out_by_default(model, data):
    run = _run(model, data[:3], steps=1)
    assert len(run.val_idx) == 1 and len(run.train_idx) == 2
    first = next(run)
    assert first.step == 0 and first.val_iou is not None
    run.result()
    assert run.outcome.checked and run.outcome.iou_before == first.val_iou


def test_two_frames_are_unchecked_and_say_so(model, data):
    with pytest.warns(UserWarning, match="unchecked: too few frames to hold one out "
                      r"\(2 given, 3 needed"):  # fmt: skip
        tuned = ns.finetune(model, data[:2], steps=1, batch_size=1, input_size=GRID)
    report = tuned.finetune_report
    assert not report.checked and report.kept == "tuned" and report.iou_before is None
    assert not _same(_adapters(tuned), _adapters(model))


def test_validation_zero_is_unchecked_and_says_so(model, data):
    run = _run(model, data, steps=1, validation=0)
    list(run)
    run.result()
    assert str(run.outcome).startswith("unchecked: no frame was held out (validation=0)")


def test_a_hold_out_that_would_leave_a_class_short_is_unchecked_and_names_it(model):
    frames = [ellipse_frame(0, classes=(1,)), ellipse_frame(1, classes=(1, 2)),
              ellipse_frame(2, classes=(2,))]  # fmt: skip
    run = _run(model, frames, steps=1)
    assert run.val_idx == []  # any frame held out leaves a class in one training frame
    list(run)
    run.result()
    assert str(run.outcome).startswith(
        "unchecked: no frame can be held out: every class must stay annotated in two training "
        "frames, and classes 1, 2 are each annotated in only two frames"
    )


def test_a_non_finite_loss_stops_and_keeps_the_best_finite_better_adapters(
    model, data, monkeypatch
):
    scripted_validation(monkeypatch, [0.1, 0.3, 0.2])
    nan_from(monkeypatch, 3)
    run = _run(model, data, steps=10)
    with pytest.raises(TrainingError, match=r"the loss became nan at step 3: fine-tuning "
                       r"stopped there; kept the tuned adapters \(step 1\)"):  # fmt: skip
        for _ in run:
            pass
    assert run.closed and list(run) == []  # nothing runs after it
    tuned = run.result()
    assert run.outcome.kept == "tuned" and run.outcome.step == 1
    assert _same(_adapters(tuned), run.best)
    assert all(bool(torch.isfinite(p).all()) for _, p in tuned.adapter_parameters())


def test_a_non_finite_loss_without_a_better_state_hands_back_the_starting_adapters(
    model, data, monkeypatch
):
    nan_from(monkeypatch, 2)
    with pytest.raises(TrainingError, match="unchecked: .*validation=0.*the original adapters "
                       "are handed back") as caught:  # fmt: skip
        ns.finetune(model, data, steps=5, batch_size=1, input_size=GRID, validation=0)
    assert caught.value.report.kept == "original"
    assert _same(_adapters(caught.value.model), _adapters(model))


def test_a_huge_learning_rate_stops_at_the_first_non_finite_loss(model, data):
    run = _run(model, data, steps=30, lr=1e6, validate_every=30)
    seen = []
    with pytest.raises(TrainingError, match="the loss became (nan|inf)") as caught:
        for s in run:
            seen.append(s)
    assert all(s.loss is None or np.isfinite(s.loss) for s in seen)
    assert len(seen) < 30
    tuned = run.result()
    assert caught.value.report.kept == "original"  # not validated better: the start
    assert _same(_adapters(tuned), _adapters(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # result() itself warns nothing
        assert run.outcome.error.startswith("the loss became")
