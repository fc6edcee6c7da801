"""The fine-tuning state file is data: plain values and tensors, never code.

A state file travels with results folders; one that holds a pickled object (which
could run a command when unpickled) or that is damaged is refused with a message that
says how to start afresh, through the API (``resume=path``) and the CLI (exit 2).
"""

from __future__ import annotations

import copy
import os
import pickle
import zipfile

import numpy as np
import pytest
import tifffile
import torch
from training_data import GRID, ellipse_frame

import napari_sansa as ns
from conftest import cli_model_args, training_size_fixtures
from napari_sansa.cli import main
from napari_sansa.core.training.state import (
    StateFileError,
    check_plain,
    load_state,
    save_state,
    to_plain,
)
from napari_sansa.core.training.trainer import STATE_FORMAT

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


class _MakesAFolder:
    """Unpickling it calls ``os.mkdir(marker)``: a stand-in for any shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious(path, marker, how: str):
    state = {"format": STATE_FORMAT, "step": _MakesAFolder(marker)}
    if how == "torch.save":  # the zip format the state files have
        torch.save(state, path)
    else:  # a bare pickle
        path.write_bytes(pickle.dumps(state))
    return path


def _plain_state():
    gen = torch.Generator().manual_seed(1)
    return {
        "format": STATE_FORMAT,
        "step": 3,
        "adapters": {"a.weight": torch.randn(2, 3, generator=gen)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [
            {"lr": 1e-4, "betas": (0.9, 0.999), "foreach": None, "params": [0]}]},
        "rng": np.random.default_rng(5).bit_generator.state,  # Python ints of 128 bits
        "torch_rng": gen.get_state(),
        "best_val": float("inf"),
        "history": [{"loss": 0.5, "val_loss": None}],
    }  # fmt: skip


# -- the file format -------------------------------------------------------------------
def test_a_state_round_trips_and_a_new_plain_field_needs_no_change(tmp_path):
    state = _plain_state()
    state["scheduler"] = {"T_max": 5, "base_lrs": [1e-4], "_last_lr": [np.float64(1e-4)]}
    back = load_state(save_state(state, tmp_path / "s.state"), fmt=STATE_FORMAT)
    assert back["rng"] == state["rng"] and back["step"] == 3
    assert torch.equal(back["adapters"]["a.weight"], state["adapters"]["a.weight"])
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["scheduler"]["_last_lr"] == [1e-4]
    assert type(back["scheduler"]["_last_lr"][0]) is float  # a numpy scalar saved as plain
    assert back["best_val"] == float("inf")


def test_saving_something_that_is_not_plain_is_refused_before_writing(tmp_path):
    state = _plain_state()
    state["history"].append({"when": tmp_path})  # a pathlib object
    with pytest.raises(TypeError, match=r"state\['history'\]\[1\]\['when'\] is a pathlib"):
        save_state(state, tmp_path / "s.state")
    assert not list(tmp_path.iterdir())


def test_plain_means_plain():
    assert check_plain(to_plain(_plain_state())) is None
    assert check_plain({"a": [np.int64(1)]}) == "state['a'][0] is a numpy.int64"
    assert check_plain({"p": torch.nn.Parameter(torch.ones(1))}).endswith("Parameter")
    assert check_plain({(1, 2): 0}) == "state has a key of type tuple"


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_state_that_would_run_code_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "code-ran"
    path = _malicious(tmp_path / "evil.state", marker, how)
    with pytest.raises(StateFileError, match="start the fine-tuning afresh") as err:
        load_state(path, fmt=STATE_FORMAT)
    assert "evil.state" in str(err.value)
    assert "Python objects" in str(err.value) or "torch.save" in str(err.value)
    assert not marker.exists()
    assert path.exists()  # the user's file is left as it was


def test_a_state_holding_a_numpy_array_is_refused_with_a_message(tmp_path):
    # torch.load(weights_only=True) rebuilds numpy arrays; they are not part of a state
    path = tmp_path / "np.state"
    torch.save({"format": STATE_FORMAT, "history": [np.zeros(3)]}, path)
    with pytest.raises(StateFileError, match="other than tensors and plain values"):
        load_state(path, fmt=STATE_FORMAT)


def _shared_lists(levels: int):
    x = [1]
    for _ in range(levels):
        x = [x, x]  # 2**levels paths through a file of a few hundred bytes per level
    return x


@pytest.mark.timeout(30)
def test_a_state_of_shared_lists_is_refused_at_once(tmp_path):
    # a "billion laughs": 40 levels of x = [x, x] (in two halves, under the depth limit)
    path = tmp_path / "laughs.state"
    torch.save({"format": STATE_FORMAT, "l": [_shared_lists(20)] * (1 << 10)}, path)
    assert path.stat().st_size < 10_000_000
    with pytest.raises(StateFileError, match=r"is damaged \(it holds more than 1000000 values"):
        load_state(path, fmt=STATE_FORMAT)
    deep = tmp_path / "deep.state"
    torch.save({"format": STATE_FORMAT, "l": _shared_lists(40)}, deep)
    with pytest.raises(StateFileError, match="is damaged .*nested more than 32 levels"):
        load_state(deep, fmt=STATE_FORMAT)


@pytest.mark.timeout(30)
def test_shared_lists_are_walked_once_and_a_list_inside_itself_is_refused():
    assert check_plain({"l": _shared_lists(30)}).endswith("(counting each repeat)")
    assert check_plain({"l": _shared_lists(18)}) is None  # 786431 values: allowed
    loop = []
    loop.append(loop)
    assert check_plain({"l": loop}) == "state['l'][0] contains itself"
    same = [1.0, 2.0]
    assert check_plain({"a": same, "b": same}) is None  # shared but small: fine


def test_a_state_with_compressed_records_is_refused_before_unpacking(tmp_path):
    # 64 MB of zeros in a file of about 70 KB: torch.load would unpack all of it
    plain = tmp_path / "plain.state"
    save_state({"format": STATE_FORMAT, "t": torch.zeros(1 << 24)}, plain)
    packed = tmp_path / "packed.state"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    plain.unlink()
    assert packed.stat().st_size < 1_000_000
    with pytest.raises(
        StateFileError, match="another tool compressed its contents.*start the fine-tuning"
    ):
        load_state(packed, fmt=STATE_FORMAT)


def _damaged(tmp_path, kind: str):
    path = tmp_path / f"{kind}.state"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(3000))
    else:
        state = _plain_state()
        save_state(state, path)
        data = path.read_bytes()
        if kind == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif kind == "flipped":  # same size, a byte of a tensor record changed
            i = data.index(state["adapters"]["a.weight"].numpy().tobytes()) + 5
            path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
        else:  # another program's torch file
            torch.save([1, 2, 3], path)
    return path


DAMAGED = ["empty", "garbage", "truncated", "flipped", "foreign"]


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_state_is_refused_with_a_message(tmp_path, kind):
    path = _damaged(tmp_path, kind)
    before = path.read_bytes()
    with pytest.raises(StateFileError, match="start the fine-tuning afresh") as err:
        load_state(path, fmt=STATE_FORMAT)
    text = str(err.value)
    assert str(path) in text
    assert "damaged" in text or "not a napari-sansa fine-tuning state" in text
    for word in ("record", "zip", "BadZipFile", "CRC", "directory"):  # the format's words
        assert word.lower() not in text.replace(str(path), "").lower(), (word, text)
    assert path.read_bytes() == before


def test_a_flipped_byte_names_the_state_file_not_a_record_inside_it(tmp_path):
    path = _damaged(tmp_path, "flipped")
    with pytest.raises(StateFileError) as err:
        load_state(path, fmt=STATE_FORMAT)
    text = str(err.value)
    assert f"{path} is damaged" in text and "some of its bytes changed" in text
    assert "napari-sansa-tmp" not in text and "/data" not in text, text


@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_a_folder_or_missing_path_is_not_called_a_state_to_delete(tmp_path, kind):
    path = tmp_path / "results"
    if kind == "folder":
        path.mkdir()
        (path / "labels.tif").write_bytes(b"mine")
    with pytest.raises(StateFileError) as err:
        load_state(path, fmt=STATE_FORMAT)
    text = str(err.value)
    said = "is a folder, not a state file" if kind == "folder" else "does not exist"
    assert f"{path} {said}" in text
    assert "delete" not in text and "over it" not in text, text
    assert "resume=" in text and "save_state()" in text
    if kind == "folder":
        assert (path / "labels.tif").read_bytes() == b"mine"


# -- through the API -------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return [ellipse_frame(s) for s in range(4)]


def _run(model, data, **kw):
    return ns.finetune_iter(model, data, steps=2, batch_size=1, input_size=GRID, **kw)


def test_the_api_refuses_a_malicious_state_file(model, data, tmp_path):
    marker = tmp_path / "code-ran"
    path = _malicious(tmp_path / "evil.state", marker, "torch.save")
    with pytest.raises(ns.InvalidInputError, match="does not load"):
        _run(model, data, resume=path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_the_api_refuses_a_damaged_state_file(model, data, tmp_path, kind):
    with pytest.raises(ns.InvalidInputError, match="is damaged.*without resume="):
        _run(model, data, resume=_damaged(tmp_path, kind))


def test_the_api_saves_and_resumes_from_a_file(model, data, tmp_path):
    whole = [s.loss for s in _run(model, data)]
    part = _run(model, data)
    next(part)  # step 1
    part.save_state(tmp_path / "run.state")
    resumed = _run(model, data, resume=str(tmp_path / "run.state"))
    assert [s.loss for s in resumed] == whole[1:]


def test_an_incomplete_state_dict_is_refused_with_a_message(model, data):
    state = _run(model, data).state_dict()
    del state["optimizer"]
    with pytest.raises(ns.InvalidInputError, match="incomplete.*optimizer"):
        _run(model, data, resume=state)
    state = _run(model, data).state_dict()
    state["best"] = {k: v[:1] for k, v in state["best"].items()}
    with pytest.raises(ns.InvalidInputError, match="damaged.*best"):
        _run(model, data, resume=state)


# well-formed files of the wrong contents: each was a traceback at the first step, or was
# accepted (cast, or a step count past the end that skipped training and wrote the result)
def _set(path, value):
    def change(state):
        *keys, last = path
        d = state
        for k in keys:
            d = d[k]
        d[last] = value(d[last]) if callable(value) else value

    return change


def _first_tensor(part, how):
    def change(state):
        name = sorted(state[part])[0]
        state[part][name] = how(state[part][name])

    return change


def _optimizer_shape(state):
    st = state["optimizer"]["state"][0]
    st["exp_avg"] = st["exp_avg"].reshape(-1)[:3].clone()


WRONG = {
    "torch_rng float32": _set(["torch_rng"], lambda t: t.float()),
    "torch_rng short": _set(["torch_rng"], lambda t: t[:100].clone()),
    "optimizer exp_avg shape": _optimizer_shape,
    "param group lr str": _set(["optimizer", "param_groups", 0, "lr"], "x"),
    "param group lr nan": _set(["optimizer", "param_groups", 0, "lr"], float("nan")),
    "pcg64 state huge": _set(["rng", "state", "state"], 10**100),
    "pcg64 has_uint32": _set(["rng", "has_uint32"], 5),
    "adapters int32": _first_tensor("adapters", lambda t: t.to(torch.int32)),
    "best int32": _first_tensor("best", lambda t: t.to(torch.int32)),
    "adapters float64": _first_tensor("adapters", lambda t: t.double()),
    "adapters nan": _first_tensor("adapters", lambda t: torch.full_like(t, float("nan"))),
    "best inf": _first_tensor("best", lambda t: torch.full_like(t, float("inf"))),
    "step huge": _set(["step"], 10**30),
    "step negative": _set(["step"], -1),
    "step past the end": _set(["step"], 3),
    "best_step negative": _set(["best_step"], -1),
    "best_step after step": _set(["best_step"], 2),
    "step bool": _set(["step"], True),
    "best_val nan": _set(["best_val"], float("nan")),
    "history str": _set(["history"], "abc"),
    "history of lists": _set(["history"], [[1, 2]]),
    "history iou": _set(["history", 0, "val_iou"], 7.0),
    "scheduler foreign": _set(["scheduler"], {"a": 1}),
    "scheduler other step": _set(["scheduler", "last_epoch"], 2),
}


@pytest.fixture(scope="module")
def one_step(model, data):
    run = _run(model, data)
    while run.step < 1:
        next(run)
    assert run.optimizer.state_dict()["state"] and run.history[0]["val_iou"] is not None
    return run.state_dict()


@pytest.mark.parametrize("case", list(WRONG))
def test_a_state_of_wrong_contents_is_refused_as_damaged(model, data, one_step, case):
    state = copy.deepcopy(one_step)
    WRONG[case](state)
    with pytest.raises(ns.InvalidInputError, match="state is damaged.*start the run afresh"):
        _run(model, data, resume=state)


def test_the_unchanged_state_resumes(model, data, one_step):
    run = _run(model, data, resume=copy.deepcopy(one_step))
    assert run.step == 1 and [s.step for s in run] == [2]


def test_a_refused_state_changes_nothing_of_the_run(model, data, one_step):
    run = _run(model, data)
    before = run.state_dict()
    bad = copy.deepcopy(one_step)
    bad["torch_rng"] = bad["torch_rng"][:100].clone()  # the last part checked
    with pytest.raises(ns.InvalidInputError, match="damaged"):
        run.load_state_dict(bad)
    after = run.state_dict()
    assert after["step"] == 0 and after["history"] == before["history"]
    assert after["optimizer"]["state"] == {} and after["rng"] == before["rng"]
    for name, t in before["adapters"].items():
        assert torch.equal(after["adapters"][name], t)
    assert [s.step for s in run] == [0, 1, 2]


# -- through the CLI -------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    train = []
    for s in range(3):
        img, lab = ellipse_frame(s)
        tifffile.imwrite(folder / f"f{s}.tif", img)
        tifffile.imwrite(folder / f"f{s}_labels.tif", lab)
        train += ["--train", str(folder / f"f{s}.tif"), str(folder / f"f{s}_labels.tif")]
    return train


def _cli(weights, train, out):
    return ["finetune", *train, *cli_model_args(weights), "--out", str(out), "--steps", "2",
            "--batch-size", "1", "--input-size", "64", "--validation", "0"]  # fmt: skip


def test_the_cli_refuses_a_malicious_state_file(weights, pair_files, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    out = tmp_path / "x.pth"
    _malicious(tmp_path / "x.pth.state", marker, "torch.save")
    assert main(_cli(weights, pair_files, out)) == 2
    err = capsys.readouterr().err
    assert "x.pth.state" in err and "does not load" in err and "--restart" in err
    assert "resuming" not in err
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_the_cli_refuses_a_damaged_state_file(weights, pair_files, tmp_path, capsys, kind):
    out = tmp_path / "x.pth"
    damaged = _damaged(tmp_path, kind)
    state = tmp_path / "x.pth.state"
    damaged.rename(state)
    before = state.read_bytes()
    assert main(_cli(weights, pair_files, out)) == 2
    err = capsys.readouterr().err
    assert "x.pth.state is damaged" in err and "--restart" in err
    assert "Traceback" not in err
    assert state.read_bytes() == before and not out.exists()
    if kind != "truncated":
        return
    assert main([*_cli(weights, pair_files, out), "--restart"]) == 0
    assert out.exists() and not state.exists()
