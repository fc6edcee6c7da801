"""Fine-tuning's bad input: clear errors, and nothing the user made is changed."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from training_data import GRID, ellipse_frame

import napari_sansa as ns
from conftest import training_size_fixtures

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.fixture(scope="module")
def data():
    return [ellipse_frame(s) for s in range(3)]


def _start(model, data, **kw):
    kw = {"steps": 1, "batch_size": 1, "input_size": GRID, **kw}
    return ns.finetune_iter(model, data, **kw)


def _copy(data):
    return [(img.copy(), lab.copy()) for img, lab in data]


def test_fewer_than_two_frames(model, data):
    with pytest.raises(ns.InvalidInputError, match="at least two annotated frames.*got 1"):
        _start(model, data[:1])


def test_a_class_in_only_one_frame_is_named_with_its_frame(model, data):
    bad = _copy(data)
    bad[1][1][2:6, 2:6] = 7
    with pytest.raises(ns.InvalidInputError, match="class 7 is annotated only in frame 1"):
        _start(model, bad)


def test_empty_labels(model, data):
    bad = _copy(data)
    bad[2][1][:] = 0
    with pytest.raises(ns.InvalidInputError, match="labels of frame 2 are empty"):
        _start(model, bad)


def test_all_foreground_labels(model, data):
    bad = _copy(data)
    bad[0][1][:] = 1
    with pytest.raises(ns.InvalidInputError, match="class 1 covers every pixel of frame 0"):
        _start(model, bad)


def test_labels_of_another_shape(model, data):
    bad = _copy(data)
    bad[1] = (bad[1][0], bad[1][1][:-3])
    with pytest.raises(ns.InvalidInputError, match=r"labels of frame 1 have shape \(61, 64\)"):
        _start(model, bad)


@pytest.mark.parametrize("kind", ["nan", "constant"])
def test_nan_and_constant_images(model, data, kind):
    bad = _copy(data)
    img = bad[1][0].astype(np.float32)
    if kind == "nan":
        img[3, 3] = np.nan
    else:
        img[:] = 5.0
    bad[1] = (img, bad[1][1])
    match = "training image 1 contains NaN" if kind == "nan" else "training image 1 is constant"
    with pytest.raises(ns.InvalidInputError, match=match):
        _start(model, bad)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "steps must be a whole number >= 1"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"lr": 0}, r"lr must be > 0"),
        ({"lr": -1e-4}, "must be > 0"),
        ({"lr": float("nan")}, "must be a number > 0"),
        ({"shots": 0}, "shots must be"),
        ({"prompt": "lasso"}, "unknown prompt kind 'lasso'"),
        ({"validation": 1.0}, r"validation must be a fraction in \[0, 1\)"),
        ({"dropout": 1.5}, "dropout must be a rate"),
        ({"input_size": 3}, "input_size must be a whole number of pixels between 16 and"),
        ({"fresh_adapters": True, "stages": (5,)}, "stages must be Hiera stages in 0..3"),
    ],
)
def test_bad_settings(model, data, kw, match):
    with pytest.raises(ns.InvalidInputError, match=match):
        _start(model, data, **kw)


def test_nothing_the_user_made_is_modified(model, data):
    mine = _copy(data)
    for img, lab in mine:
        img.flags.writeable = False
        lab.flags.writeable = False
    run = _start(model, mine, steps=2, validation=0.34)
    list(run)
    for (a, b), (c, d) in zip(mine, data, strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d)


def test_an_existing_output_is_refused_unless_overwrite(model, tmp_path):
    path = tmp_path / "adapters.pth"
    path.write_bytes(b"earlier work")
    with pytest.raises(ns.InvalidInputError, match="already exists.*overwrite=True"):
        model.save_adapters(path)
    assert path.read_bytes() == b"earlier work"
    model.save_adapters(path, overwrite=True)
    assert torch.load(path, weights_only=True)["model"]


def test_disk_full_while_saving_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = tmp_path / "adapters.pth"
    model.save_adapters(path)
    before = path.read_bytes()

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="no space left.*earlier file there is intact"):
        model.save_adapters(path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.pth"]


def test_plain_sam2_has_nothing_to_save(weights, tmp_path):
    from conftest import CONFIG, TRAINING_SIZE

    plain = ns.load_model(config=CONFIG, sam2_checkpoint=weights[0], device="cpu",
                          image_size=TRAINING_SIZE)  # fmt: skip
    with pytest.raises(ns.InvalidInputError, match="no adapters to save"):
        plain.save_adapters(tmp_path / "a.pth")
    assert not (tmp_path / "a.pth").exists()


def test_nan_loss_stops_and_an_unchecked_run_hands_back_the_starting_adapters(
    model, data, monkeypatch
):
    from napari_sansa.core.training import trainer

    run = _start(model, data, steps=3, validation=0)
    start = {n: p.detach().clone() for n, p in run.named}
    next(run)  # one step: nothing measured it

    def nan_terms(*a, **k):
        nan = torch.tensor(float("nan"), requires_grad=True)
        return nan, nan, None

    monkeypatch.setattr(trainer, "episode_terms", nan_terms)
    with pytest.raises(trainer.TrainingError, match="loss became nan at step 2.*Lower the lear"):
        next(run)
    tuned = run.result()
    for n, p in tuned.adapter_parameters():
        assert torch.equal(p, start[n])
