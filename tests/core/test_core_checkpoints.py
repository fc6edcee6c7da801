"""Loading Meta's SAM2 files and the authors' adapter files, and refusing files that do not fit."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

import napari_sansa as ns
from napari_sansa.core.models.checkpoints import save_adapter_checkpoint, save_sam2_checkpoint
from napari_sansa.core.models.random_weights import write_random_checkpoints

SIZE = 256


def _load(sam2, adapters=None, config="sam2_hiera_t", **kw):
    return ns.load_model(
        config=config,
        sam2_checkpoint=sam2,
        adapter_checkpoint=adapters,
        device="cpu",
        image_size=SIZE,
        **kw,
    )


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saved_checkpoints_load_back_to_identical_outputs(
    model, weights, tmp_path, images, disk_mask
):
    # write the loaded model back out in both official formats, load again: same outputs
    state = {k: v for k, v in model.sam.state_dict().items() if ".adapter." not in k}
    sam2 = save_sam2_checkpoint(state, tmp_path / "again_sam2.pt")
    adapters = save_adapter_checkpoint(model.sam, tmp_path / "again_adapters.pth")
    raw = torch.load(adapters, weights_only=True)["model"]
    assert raw and all(
        re.match(r"sam\.image_encoder\.trunk\.blocks\.\d+\.adapter\.", k) for k in raw
    )
    again = _load(sam2, adapters)
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[70, 30]], label=2)])]
    a = model.segment(ref, images[1:3])
    b = again.segment(ref, images[1:3])
    for p, q in zip(a, b, strict=True):
        for c in (1, 2):
            assert np.array_equal(p.logits[c], q.logits[c])


def test_adapter_layout_is_read_from_the_file(model, tmp_path):
    # default: stages 2 and 3, bottleneck int(block input dim x 0.3)
    assert model.adapter_stages == (2, 3)
    assert model.adapters[3] == int(192 * 0.3) and model.adapters[4] == int(384 * 0.3)
    assert model.adapters[11] == int(384 * 0.3 * 2)
    sam2, adapters = write_random_checkpoints(
        tmp_path, "sam2_hiera_t", image_size=SIZE, stages=(1, 3), channel_factor=0.8, seed=3
    )
    other = _load(sam2, adapters)
    assert other.adapter_stages == (1, 3)
    assert other.adapters[1] == int(96 * 0.8) and other.adapters[10] == int(384 * 0.8)


def test_without_adapters_it_is_plain_sam2(model, weights, images, disk_mask):
    plain = _load(weights[0])
    assert plain.adapters == {} and "no adapters" in repr(plain)
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    a = model.segment(ref, images[1:2])[0].logits[1]
    b = plain.segment(ref, images[1:2])[0].logits[1]
    assert np.abs(a - b).max() > 1e-2


def test_config_is_guessed_from_the_sam2_file(weights):
    m = ns.load_model(sam2_checkpoint=weights[0], device="cpu", image_size=SIZE)
    assert m.config == "sam2_hiera_t"


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    return write_random_checkpoints(
        tmp_path_factory.mktemp("small"), "sam2_hiera_s", image_size=SIZE
    )


def _check_refused(call, path, *words):
    before = _digest(path) if path.is_file() else None
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert str(path) in text, text
    for w in words:
        assert w in text, text
    if before is not None:
        assert _digest(path) == before  # the file is left as it was
    return text


def test_wrong_truncated_and_empty_files(weights, tmp_path):
    sam2, adapters = weights
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    _check_refused(lambda: _load(text), text, "not a PyTorch checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _check_refused(lambda: _load(empty), empty, "empty")
    data = sam2.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    _check_refused(lambda: _load(cut), cut, "truncated")
    cut_a = tmp_path / "cut_adapters.pth"
    cut_a.write_bytes(adapters.read_bytes()[:-100])
    _check_refused(lambda: _load(sam2, cut_a), cut_a, "truncated")
    missing = tmp_path / "nope.pt"
    with pytest.raises(ValueError, match="does not exist"):
        _load(missing)
    with pytest.raises(FileNotFoundError):
        _load(missing)


def test_files_of_another_size_or_role(weights, small_weights, tmp_path):
    sam2, adapters = weights
    s_sam2, s_adapters = small_weights
    t = _check_refused(lambda: _load(s_sam2), s_sam2, "sam2_hiera_s", "sam2_hiera_t")
    assert "config=" in t
    _check_refused(lambda: _load(sam2, s_adapters), s_adapters, "another SAM2 size")
    _check_refused(lambda: _load(adapters), adapters, "adapter checkpoint", "sam2_checkpoint")
    _check_refused(lambda: _load(sam2, sam2), sam2, "not a SANSA adapter", "sam2_checkpoint")


def test_missing_and_extra_keys(weights, tmp_path):
    sam2, adapters = weights
    state = torch.load(sam2, weights_only=True)["model"]
    assert "no_obj_ptr" in state  # Meta's format carries the object-score heads ...
    fewer = dict(state)
    fewer.pop("memory_attention.layers.0.linear1.weight")
    p = save_sam2_checkpoint(fewer, tmp_path / "fewer.pt")
    _check_refused(lambda: _load(p), p, "missing", "memory_attention.layers.0.linear1.weight")
    more = dict(state, **{"image_encoder.trunk.extra.weight": torch.zeros(3)})
    p = save_sam2_checkpoint(more, tmp_path / "more.pt")
    _check_refused(lambda: _load(p), p, "unexpected", "image_encoder.trunk.extra.weight")
    # ... which are ignored, exactly those: a file without them loads the same
    no_obj = {k: v for k, v in state.items() if "obj_score" not in k and k != "no_obj_ptr"}
    p = save_sam2_checkpoint(no_obj, tmp_path / "no_obj.pt")
    _load(p)
    reshaped = dict(state)
    reshaped["sam_mask_decoder.iou_token.weight"] = torch.zeros(2, 5)
    p = save_sam2_checkpoint(reshaped, tmp_path / "reshaped.pt")
    _check_refused(lambda: _load(p), p, "another shape", "iou_token")


def test_incomplete_or_foreign_adapter_files(weights, tmp_path):
    sam2, adapters = weights
    state = torch.load(adapters, weights_only=True)["model"]
    part = {k: v for k, v in state.items() if not k.endswith("blocks.7.adapter.up_proj.bias")}
    p = tmp_path / "part.pth"
    torch.save({"model": part}, p)
    _check_refused(lambda: _load(sam2, p), p, "block 7", "incomplete")
    far = dict(state)
    far["sam.image_encoder.trunk.blocks.40.adapter.down_proj.weight"] = torch.zeros(3, 3)
    for name in (
        "adapter_layer_norm_before.weight",
        "adapter_layer_norm_before.bias",
        "down_proj.bias",
        "up_proj.weight",
        "up_proj.bias",
    ):
        far[f"sam.image_encoder.trunk.blocks.40.adapter.{name}"] = torch.zeros(3)
    p = tmp_path / "far.pth"
    torch.save({"model": far}, p)
    _check_refused(lambda: _load(sam2, p), p, "larger SAM2")
    p = tmp_path / "nomodel.pth"
    torch.save({"state_dict": state}, p)
    _check_refused(lambda: _load(sam2, p), p, "'model'")


def test_authors_training_checkpoints_with_args_load(weights, tmp_path):
    """The authors save {'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}."""
    import argparse

    sam2, adapters = weights
    state = torch.load(adapters, weights_only=True)["model"]
    p = tmp_path / "checkpoint0004.pth"
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]},
            "lr_scheduler": {"T_max": 100, "last_epoch": 3, "base_lrs": [1e-4]},
            "epoch": 4,
            "args": argparse.Namespace(
                adaptformer_stages=[2, 3], channel_factor=0.3, device="cuda"
            ),
        },
        p,
    )
    assert _load(sam2, p).adapter_stages == (2, 3)


def test_random_weights_have_no_constant_parameters(weights):
    state = torch.load(weights[0], weights_only=True)["model"]
    for k, v in state.items():
        if v.is_floating_point() and v.numel() > 1:
            assert v.std() > 0, k


# -- damaged weights: refused at load, never NaN logits -------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("role", ["sam2", "adapters"])
def test_non_finite_weights_are_refused_naming_the_tensor(weights, tmp_path, bad, role):
    sam2, adapters = weights
    source = sam2 if role == "sam2" else adapters
    state = torch.load(source, weights_only=True)["model"]
    name = sorted(state)[len(state) // 2]
    state[name] = state[name].clone()
    state[name].view(-1)[3] = bad
    p = tmp_path / f"bad_{role}.pt"
    torch.save({"model": state}, p)
    call = (lambda: _load(p)) if role == "sam2" else (lambda: _load(sam2, p))
    _check_refused(call, p, "damaged", name, "NaN or infinite")


# where 4 KiB are overwritten: byte offsets (negative: from the end)
_PLACES = {
    "file header": 0,
    "pickle": 100,
    "first tensor": 3000,
    "middle tensor": None,  # half-way
    "last tensor": -30000,
    "zip directory": -4096,
}


@pytest.mark.parametrize("place", list(_PLACES))
@pytest.mark.parametrize("fill", ["random", "zeros"])
def test_4_kib_overwritten_in_place_is_refused(weights, tmp_path, place, fill):
    # same size, bytes changed anywhere; random bytes in a tensor give NaN weights, zeros
    # give finite ones: both are caught (the zip's CRC-32s, then the finite check)
    from napari_sansa.core.models.checkpoints import read_checkpoint

    sam2, _ = weights
    raw = bytearray(sam2.read_bytes())
    at = _PLACES[place]
    at = len(raw) // 2 if at is None else at % len(raw)
    raw[at : at + 4096] = np.random.default_rng(7).bytes(4096) if fill == "random" else bytes(4096)
    p = tmp_path / "overwritten.pt"
    p.write_bytes(bytes(raw))
    text = _check_refused(lambda: read_checkpoint(p, "SAM2 checkpoint"), p)
    assert any(w in text for w in ("damaged", "corrupt", "not a PyTorch checkpoint")), text
    assert "again" in text, text  # says what to do


def test_overwritten_checkpoint_is_refused_by_load_model(weights, tmp_path):
    sam2, adapters = weights
    for source in (sam2, adapters):
        raw = bytearray(source.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 4096] = bytes(4096)
        p = tmp_path / f"zeroed{source.suffix}"
        p.write_bytes(bytes(raw))
        call = (lambda p=p: _load(p)) if source == sam2 else (lambda p=p: _load(sam2, p))
        _check_refused(call, p, "damaged", "bytes changed", "Download or copy the file again")


#: words of the file format inside a checkpoint, which say nothing to a user
_INTERNAL = ("record", "data.pkl", "/data/", "archive", "CRC", "zip", "directory", "magic")


@pytest.mark.parametrize("damage", ["a tensor's bytes", "the pickle's bytes", "its end", "cut"])
@pytest.mark.parametrize("role", ["SAM2", "adapter"])
def test_a_corrupted_checkpoint_says_which_file_and_what_to_do_in_plain_words(
    weights, tmp_path, damage, role
):
    """Not the name of a record inside the file (``sam2/data/144``) nor zip terms: the
    file given, that it is damaged, and to download it again or choose another."""
    sam2, adapters = weights
    source = sam2 if role == "SAM2" else adapters
    raw = bytearray(source.read_bytes())
    if damage == "cut":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "its end":  # the table of the file's contents, zeroed
        raw[-4096:] = bytes(4096)
    else:
        raw[len(raw) // 2 if damage == "a tensor's bytes" else 100] ^= 0xFF
    p = tmp_path / f"damaged{source.suffix}"
    p.write_bytes(bytes(raw))
    call = (lambda: _load(p)) if role == "SAM2" else (lambda: _load(sam2, p))
    text = _check_refused(call, p, f"{role} checkpoint {p}", "damaged")
    assert "Download or copy the file again, or choose another weights file" in text, text
    for word in _INTERNAL:
        assert word.lower() not in text.replace(str(p), "").lower(), (word, text)


def test_unreadable_checkpoint_names_the_file(weights, tmp_path, monkeypatch):
    import builtins
    import os

    from napari_sansa.core.models import checkpoints

    sam2, _ = weights
    p = tmp_path / "locked.pt"
    p.write_bytes(sam2.read_bytes())
    if os.geteuid() == 0:  # root reads anything: the file system refusing is simulated

        def refuse(file, *args, **kw):
            if str(file) == str(p):
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kw)

        monkeypatch.setattr(checkpoints, "open", refuse, raising=False)
    else:
        p.chmod(0)
    with pytest.raises(ns.CheckpointError) as info:
        _load(p)
    assert str(p) in str(info.value) and "cannot be read" in str(info.value)
    assert "chmod" in str(info.value)


# -- tensors that are not weights, paths that are folders ------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
@pytest.mark.parametrize("role", ["sam2", "adapters"])
def test_non_floating_weights_are_refused_naming_the_file_and_tensor(
    weights, tmp_path, dtype, role
):
    # integer tensors were cast into the model's floats silently and the model ran
    sam2, adapters = weights
    source = sam2 if role == "sam2" else adapters
    state = torch.load(source, weights_only=True)["model"]
    name = sorted(k for k in state if k.endswith("up_proj.weight") or "qkv.weight" in k)[0]
    state[name] = (state[name] * 100).to(dtype)
    p = tmp_path / f"int_{role}.pt"
    torch.save({"model": state}, p)
    call = (lambda: _load(p)) if role == "sam2" else (lambda: _load(sam2, p))
    dtype_name = str(dtype).removeprefix("torch.")
    _check_refused(call, p, name, dtype_name, "floating point")


def test_a_folder_given_as_a_checkpoint_is_named_a_folder(weights, tmp_path, capsys):
    from training_data import ellipse_frame

    from napari_sansa.cli import main

    sam2, adapters = weights
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / "tuned.pth").write_bytes(adapters.read_bytes())
    with pytest.raises(ns.CheckpointError, match="is a folder.*tuned.pth"):
        _load(sam2, folder)
    with pytest.raises(ns.CheckpointError, match="SAM2 checkpoint .* is a folder"):
        _load(tmp_path)
    img, lab = ellipse_frame(0)
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "lab.png")
    for flag, value in (("--adapter-checkpoint", folder), ("--sam2-checkpoint", tmp_path)):
        args = ["segment", str(tmp_path / "img.png"), "--reference", str(tmp_path / "img.png"),
                str(tmp_path / "lab.png"), "--out", str(tmp_path / "seg"), "--device", "cpu",
                "--config", "sam2_hiera_t", "--image-size", str(SIZE), "--input-size", "64",
                "--sam2-checkpoint", str(sam2), "--adapter-checkpoint", str(adapters)]  # fmt: skip
        args[args.index(flag) + 1] = str(value)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"{value} is a folder" in err and ".pt/.pth file" in err, err
        assert "does not exist" not in err


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("role", ["sam2", "adapters"])
def test_float8_weights_are_refused_with_a_message(weights, tmp_path, dtype, role):
    # isfinite is not implemented for float8: a NotImplementedError traceback came out
    sam2, adapters = weights
    source = sam2 if role == "sam2" else adapters
    state = torch.load(source, weights_only=True)["model"]
    name = sorted(k for k in state if k.endswith("up_proj.weight") or "qkv.weight" in k)[0]
    state[name] = state[name].to(dtype)
    p = tmp_path / f"f8_{role}.pt"
    torch.save({"model": state}, p)
    call = (lambda: _load(p)) if role == "sam2" else (lambda: _load(sam2, p))
    _check_refused(call, p, name, str(dtype).removeprefix("torch."), "float32, float16")


def test_complex_weights_are_still_refused(weights, tmp_path):
    sam2, adapters = weights
    state = torch.load(adapters, weights_only=True)["model"]
    name = sorted(k for k in state if k.endswith("up_proj.weight"))[0]
    state[name] = state[name].to(torch.complex64)
    p = tmp_path / "complex.pt"
    torch.save({"model": state}, p)
    _check_refused(lambda: _load(sam2, p), p, name, "complex64", "floating point")


def test_a_checkpoint_with_compressed_records_is_refused(weights, tmp_path):
    # torch.save never compresses; a deflated record can unpack to far more than its size
    import zipfile

    sam2, adapters = weights
    p = tmp_path / "deflated.pt"
    with zipfile.ZipFile(adapters) as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    _check_refused(lambda: _load(sam2, p), p, "compressed", "torch.save")
