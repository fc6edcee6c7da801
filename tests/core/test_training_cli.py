"""``napari-sansa finetune``: files in, adapters out, resumable, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from training_data import ellipse_frame

from conftest import cli_model_args
from napari_sansa.cli import main


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
    assert main(_args(weights, pairs, out)) == 0
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
