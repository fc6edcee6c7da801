"""``napari-sansa finetune``: files in, adapters out, resumable, and what it refuses."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch
from training_data import ellipse_frame

from conftest import cli_model_args, nan_from, scripted_validation, training_size_fixtures
from napari_sansa.cli import main
from napari_sansa.core.errors import InvalidInputError

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    out = []
    for s in range(3):
        img, lab = ellipse_frame(s)
        tifffile.imwrite(folder / "images" / f"f{s}.tif", img)
        tifffile.imwrite(folder / "labels" / f"f{s}.tif", lab)
        out.append((folder / "images" / f"f{s}.tif", folder / "labels" / f"f{s}.tif"))
    return folder, out


def _args(weights, pairs, out, *extra):
    folder, files = pairs
    train = []
    for img, lab in files:
        train += ["--train", str(img), str(lab)]
    return ["finetune", *train, *cli_model_args(weights), "--out", str(out), "--steps", "4",
            "--batch-size", "1", "--input-size", "64", "--validation", "0.34",
            "--validate-every", "2", "--save-every", "1", *extra]  # fmt: skip


def _adapters(path):
    return torch.load(path, weights_only=True)["model"]


def test_finetune_writes_adapters_that_segment_uses(weights, pairs, tmp_path):
    out = tmp_path / "tuned.pth"
    assert main(_args(weights, pairs, out, "--validation", "0")) == 0  # unchecked: the tuned
    saved = _adapters(out)
    original = _adapters(weights[1])
    assert set(saved) == set(original)
    assert any(not torch.equal(saved[k], original[k]) for k in saved)
    assert not (tmp_path / "tuned.pth.state").exists()
    folder, files = pairs
    seg = tmp_path / "seg"
    args = cli_model_args(weights)
    args[args.index("--adapter-checkpoint") + 1] = str(out)
    code = main(["segment", str(files[2][0]), "--reference", str(files[0][0]), str(files[0][1]),
                 "--out", str(seg), "--input-size", "64", *args])  # fmt: skip
    assert code == 0 and list(seg.glob("*.tif"))


def test_a_folder_of_pairs_is_read(weights, pairs, tmp_path):
    from napari_sansa.dataset.finetune import find_pairs

    folder, files = pairs
    assert find_pairs(folder) == sorted(files)
    out = tmp_path / "a.pth"
    args = ["finetune", "--train", str(folder), *cli_model_args(weights), "--out", str(out),
            "--steps", "1", "--batch-size", "1", "--input-size", "64",
            "--validation", "0"]  # fmt: skip
    assert main(args) == 0 and out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_named_like_a_training_image_is_refused_not_dropped(tmp_path):
    from napari_sansa.dataset.finetune import find_pairs

    folder = tmp_path / "train"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for s in range(2):
        img, lab = ellipse_frame(s)
        tifffile.imwrite(folder / "images" / f"f{s}.tif", img)
        tifffile.imwrite(folder / "labels" / f"f{s}.tif", lab)
    os.mkfifo(folder / "images" / "f2.tif")
    tifffile.imwrite(folder / "labels" / "f2.tif", lab)
    with pytest.raises(InvalidInputError, match=r"f2\.tif is a named pipe \(FIFO\), not a regular"):
        find_pairs(folder)


@pytest.mark.slow
def test_a_killed_run_continues_and_ends_where_an_uninterrupted_one_ends(
    weights, pairs, tmp_path, monkeypatch
):
    whole = tmp_path / "whole.pth"
    assert main(_args(weights, pairs, whole)) == 0
    restore = _dies_at(monkeypatch, 3)
    out = tmp_path / "resumed.pth"
    assert main(_args(weights, pairs, out)) == 130
    assert not out.exists()
    state = torch.load(tmp_path / "resumed.pth.state", weights_only=True)  # data only
    assert state["step"] == 2
    restore()
    assert main(_args(weights, pairs, out)) == 0
    a, b = _adapters(whole), _adapters(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed.pth.state").exists()


def test_an_existing_out_is_refused_and_kept(weights, pairs, tmp_path, capsys):
    out = tmp_path / "mine.pth"
    out.write_bytes(b"my earlier adapters")
    assert main(_args(weights, pairs, out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"my earlier adapters"
    assert main(_args(weights, pairs, out, "--overwrite", "--steps", "1")) == 0
    assert _adapters(out)


def _dies_at(monkeypatch, n):
    from napari_sansa.core.training import trainer

    real = trainer.Finetuning._train_step
    calls = {"n": 0}

    def dies(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer.Finetuning, "_train_step", dies)
    return lambda: monkeypatch.setattr(trainer.Finetuning, "_train_step", real)


def test_a_state_of_other_settings_is_refused(weights, pairs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "y.pth"
    restore = _dies_at(monkeypatch, 2)
    assert main(_args(weights, pairs, out, "--lr", "1e-3")) == 130
    restore()
    assert (tmp_path / "y.pth.state").exists()
    capsys.readouterr()
    assert main(_args(weights, pairs, out)) == 2
    err = capsys.readouterr().err
    assert "another run" in err and "lr" in err and "--restart" in err
    assert main(_args(weights, pairs, out, "--restart", "--steps", "1")) == 0
    assert not (tmp_path / "y.pth.state").exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--steps", "0"], "steps must be a whole number >= 1"),
        (["--lr", "0"], "must be > 0"),
        (["--input-size", "big"], "--input-size must be a number"),
    ],
)
def test_bad_options(weights, pairs, tmp_path, capsys, extra, match):
    assert main(_args(weights, pairs, tmp_path / "z.pth", *extra)) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "z.pth").exists()


def test_one_training_pair_is_refused(weights, pairs, tmp_path, capsys):
    folder, files = pairs
    args = ["finetune", "--train", str(files[0][0]), str(files[0][1]), *cli_model_args(weights),
            "--out", str(tmp_path / "o.pth")]  # fmt: skip
    assert main(args) == 2
    assert "at least two annotated frames" in capsys.readouterr().err
    assert np.asarray(tifffile.imread(files[0][1])).any()  # the label file is untouched


def test_finetune_says_it_kept_the_tuned_adapters(weights, pairs, tmp_path, capsys, monkeypatch):
    scripted_validation(monkeypatch, [0.1, 0.3, 0.4])  # steps 0, 2, 4
    out = tmp_path / "up.pth"
    assert main(_args(weights, pairs, out)) == 0
    err = capsys.readouterr().err
    assert ("kept the tuned adapters (step 4): held-out IoU 0.100 -> 0.400 (1 held-out frame); "
            f"wrote them to {out}") in err  # fmt: skip
    original = _adapters(weights[1])
    assert any(not torch.equal(v, original[k]) for k, v in _adapters(out).items())


def test_finetune_that_made_it_worse_writes_the_original_and_says_so(
    weights, pairs, tmp_path, capsys, monkeypatch
):
    scripted_validation(monkeypatch, [0.14, 0.10, 0.04], [1.04, 1.0, 0.9])
    out = tmp_path / "same.pth"
    assert main(_args(weights, pairs, out)) == 0
    err = capsys.readouterr().err
    assert "kept the original adapters: held-out IoU fell 0.140 -> 0.100" in err
    assert f"wrote them, unchanged, to {out}" in err
    saved, original = _adapters(out), _adapters(weights[1])
    assert all(torch.equal(v, original[k]) for k, v in saved.items())


def test_a_huge_learning_rate_stops_and_writes_nothing(weights, pairs, tmp_path, capsys):
    out = tmp_path / "nan.pth"
    assert main(_args(weights, pairs, out, "--lr", "1e6", "--steps", "30")) == 1
    err = capsys.readouterr().err
    assert "the loss became" in err and "fine-tuning stopped there" in err
    assert f"wrote nothing ({out} was not written)" in err
    assert "Lower the learning rate (--lr)" in err
    assert not out.exists() and not (tmp_path / "nan.pth.state").exists()


def test_a_non_finite_loss_writes_the_best_finite_adapters(
    weights, pairs, tmp_path, capsys, monkeypatch
):
    scripted_validation(monkeypatch, [0.1, 0.3])  # steps 0 and 2
    nan_from(monkeypatch, 3)
    out = tmp_path / "best.pth"
    assert main(_args(weights, pairs, out, "--steps", "10")) == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 3: fine-tuning stopped there" in err
    assert f"wrote the best finite adapters (step 2) to {out}" in err
    saved = _adapters(out)
    assert all(torch.isfinite(v).all() for v in saved.values())
    original = _adapters(weights[1])
    assert any(not torch.equal(v, original[k]) for k, v in saved.items())


@pytest.mark.parametrize("part", ["torch_rng", "step"])
def test_a_state_of_wrong_contents_is_refused_with_exit_2(
    weights, pairs, tmp_path, capsys, monkeypatch, part
):
    # a float32 torch_rng was a TypeError traceback at the first step (exit 1); a step count
    # past the end skipped training and wrote the result
    from napari_sansa.core.training.state import load_state, save_state

    out = tmp_path / "z.pth"
    restore = _dies_at(monkeypatch, 2)
    assert main(_args(weights, pairs, out)) == 130
    restore()
    path = tmp_path / "z.pth.state"
    state = load_state(path)
    state[part] = state["torch_rng"].float() if part == "torch_rng" else 10**30
    save_state(state, path)
    before = path.read_bytes()
    capsys.readouterr()
    assert main(_args(weights, pairs, out)) == 2
    err = capsys.readouterr().err
    assert "state is damaged" in err and part in err and "--restart" in err
    assert "Traceback" not in err and "resuming" not in err
    assert path.read_bytes() == before and not out.exists()
    assert main(_args(weights, pairs, out, "--restart")) == 0
    assert out.exists() and not path.exists()
