"""bf16 on the CPU (issue 21): detection of bf16 units (with fakes, never the hardware),
``precision="auto"``, the warning on CPUs without bf16, and the encoder held in bf16."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import load_test_model, make_image
from napari_sansa.core import InvalidInputError, cpu_bf16
from napari_sansa.core.models.device import resolve_precision
from napari_sansa.core.models.settings import ModelSettings

CPU = torch.device("cpu")
AMX = frozenset({"fpu", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
AVX512_BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
PLAIN = frozenset({"fpu", "sse4_2", "avx2"})


@pytest.fixture
def fake_cpu(monkeypatch):
    """``fake_cpu(flags)``: this process sees a CPU with ``flags`` (oneDNN bf16 on)."""

    def fake(flags, mkldnn=True):
        monkeypatch.setattr(cpu_bf16, "cpu_flags", lambda cpuinfo=None: frozenset(flags))
        monkeypatch.setattr(cpu_bf16, "_mkldnn_bf16", lambda: mkldnn)
        monkeypatch.setattr(cpu_bf16, "_said", set())
        monkeypatch.delenv(cpu_bf16.AUTO_BF16_ENV, raising=False)  # conftest sets it

    return fake


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
        "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\nbugs\t\t: spectre_v1\n"
    )
    assert cpu_bf16.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpu_bf16.cpu_flags(tmp_path / "missing") == frozenset()  # macOS, Windows


def test_bf16_units_from_the_flags():
    assert cpu_bf16.cpu_bf16_units(AMX, mkldnn=True) == "amx"
    assert cpu_bf16.cpu_bf16_units(AVX512_BF16, mkldnn=True) == "avx512_bf16"
    assert cpu_bf16.cpu_bf16_units(PLAIN, mkldnn=True) is None
    assert cpu_bf16.cpu_bf16_units(AMX, mkldnn=False) is None  # a torch that cannot use them


def test_auto_takes_bf16_on_a_cpu_with_amx_and_says_so(fake_cpu, caplog):
    fake_cpu(AMX)
    with caplog.at_level(logging.INFO, logger="napari_sansa.core.cpu_bf16"):
        assert resolve_precision("auto", CPU) == torch.bfloat16
    assert "bf16" in caplog.text and "AMX" in caplog.text
    settings = ModelSettings(sam2_checkpoint="x.pt", device="cpu")
    assert settings.resolved() == ("cpu", "bf16")
    assert resolve_precision("fp32", CPU) == torch.float32  # fp32 stays available


def test_environment_keeps_auto_in_fp32_on_a_cpu_with_amx(fake_cpu, caplog, monkeypatch):
    """NAPARI_SANSA_CPU_BF16=0: "auto" is fp32 on an AMX CPU too (a cluster of mixed CPUs
    labels alike); "bf16" asked for is still bf16; another value is refused by name."""
    fake_cpu(AMX)
    monkeypatch.setenv(cpu_bf16.AUTO_BF16_ENV, "0")
    with caplog.at_level(logging.INFO, logger="napari_sansa.core.cpu_bf16"):
        assert resolve_precision("auto", CPU) == torch.float32
    assert "fp32" in caplog.text and "NAPARI_SANSA_CPU_BF16=0" in caplog.text
    assert ModelSettings(sam2_checkpoint="x.pt", device="cpu").resolved() == ("cpu", "fp32")
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    monkeypatch.setenv(cpu_bf16.AUTO_BF16_ENV, "")  # empty: as unset
    assert resolve_precision("auto", CPU) == torch.bfloat16
    monkeypatch.setenv(cpu_bf16.AUTO_BF16_ENV, "no")
    with pytest.raises(InvalidInputError, match="NAPARI_SANSA_CPU_BF16 is 'no': set it to 0"):
        resolve_precision("auto", CPU)


@pytest.mark.parametrize("flags", [AVX512_BF16, PLAIN], ids=["avx512_bf16", "none"])
def test_auto_stays_fp32_without_amx(fake_cpu, caplog, flags):
    fake_cpu(flags)
    with caplog.at_level(logging.INFO, logger="napari_sansa.core.cpu_bf16"):
        assert resolve_precision("auto", CPU) == torch.float32
    assert "fp32" in caplog.text
    assert ModelSettings(sam2_checkpoint="x.pt", device="cpu").resolved() == ("cpu", "fp32")


def test_bf16_on_a_cpu_without_bf16_works_and_warns(fake_cpu, weights):
    fake_cpu(PLAIN)
    with pytest.warns(UserWarning, match="without bf16 arithmetic.*slower than fp32"):
        assert resolve_precision("bf16", CPU) == torch.bfloat16
    with pytest.warns(UserWarning, match="slower than fp32"):
        model = load_test_model(weights, precision="bf16", cache_bytes=0)
    labels = model.segment(*_episode())[0].labels
    assert labels.shape == (96, 128)


def test_bf16_with_bf16_units_does_not_warn(fake_cpu, recwarn):
    fake_cpu(AVX512_BF16)
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    assert not [w for w in recwarn if "bf16" in str(w.message)]


def _episode():
    import napari_sansa as ns

    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    ref = ns.Reference(make_image(0), [ns.Mask(mask, label=1), ns.Box((5, 95, 40, 125), label=2)])
    return [ref], [make_image(1), make_image(2)]


def test_bf16_holds_the_encoder_in_bf16_and_labels_like_fp32(weights, fake_cpu):
    fake_cpu(AMX)  # "auto" on a CPU with AMX: the bf16 path
    bf16 = load_test_model(weights, cache_bytes=0)
    fp32 = load_test_model(weights, precision="fp32", cache_bytes=0)
    assert bf16.dtype == torch.bfloat16 and bf16.engine.cpu_bf16
    assert {p.dtype for p in bf16.sam.image_encoder.parameters()} == {torch.bfloat16}
    # what must stay fp32 does: the decoder, memory attention and memory encoder
    for part in (bf16.sam.sam_mask_decoder, bf16.sam.memory_attention, bf16.sam.memory_encoder):
        assert {p.dtype for p in part.parameters()} == {torch.float32}
    assert {p.dtype for p in fp32.sam.parameters()} == {torch.float32}
    x = torch.randn(1, 3, bf16.image_size, bf16.image_size)
    with torch.inference_mode():
        got, want = bf16.engine.encode(x).top, fp32.engine.encode(x).top
    assert not torch.equal(got.float(), want)  # computed in bf16 ...
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max()  # ... close to fp32
    a = fp32.segment(*_episode())
    b = bf16.segment(*_episode(), mode="sequential")
    c = fp32.segment(*_episode(), mode="sequential")
    for p, q in zip([*a, *c], [*bf16.segment(*_episode()), *b], strict=True):
        assert q.labels.shape == p.labels.shape
        assert (p.labels == q.labels).mean() > 0.95
        assert all(np.isfinite(v).all() for v in q.logits.values())


def test_a_fine_tuned_model_runs_the_same_bf16_path_as_the_loaded_one(weights, fake_cpu):
    """``wrap_model`` (the model fine-tuning returns) holds the encoder in bf16 as
    ``load_model`` does, not the whole model under autocast: a copy with the same weights
    labels exactly as the loaded model does."""
    from napari_sansa.core.models.trainable import trainable_copy, wrap_model

    fake_cpu(AMX)
    bf16 = load_test_model(weights, cache_bytes=0)
    copy = wrap_model(bf16, trainable_copy(bf16))
    assert copy.dtype == torch.bfloat16 and copy.engine.cpu_bf16
    assert {p.dtype for p in copy.sam.image_encoder.parameters()} == {torch.bfloat16}
    for part in (copy.sam.sam_mask_decoder, copy.sam.memory_attention):
        assert {p.dtype for p in part.parameters()} == {torch.float32}
    for p, q in zip(bf16.segment(*_episode()), copy.segment(*_episode()), strict=True):
        for c in p.logits:
            np.testing.assert_array_equal(q.logits[c], p.logits[c])


@pytest.mark.slow
def test_the_model_fine_tuning_returns_holds_its_encoder_in_bf16(weights, fake_cpu):
    import napari_sansa as ns

    fake_cpu(AMX)
    bf16 = load_test_model(weights, cache_bytes=0)
    mask = np.zeros((96, 128), np.uint8)
    mask[20:60, 30:90] = 1
    tuned = ns.finetune(bf16, [(make_image(0), mask)] * 2, steps=1, batch_size=1,
                        input_size=64, seed=0)  # fmt: skip
    assert tuned.engine.cpu_bf16
    assert {p.dtype for p in tuned.sam.image_encoder.parameters()} == {torch.bfloat16}
    # its adapters as training left them are kept in fp32: tuning it again starts there
    from napari_sansa.core.cpu_bf16 import fp32_adapters
    from napari_sansa.core.models.trainable import trainable_copy

    kept = fp32_adapters(tuned.sam)
    assert kept and all(v.dtype == torch.float32 for v in kept.values())
    assert any((v != v.bfloat16().float()).any() for v in kept.values())
    again = trainable_copy(tuned)
    adapters = {n: p for n, p in again.sam.named_parameters() if ".adapter." in n}
    assert adapters.keys() == kept.keys()
    assert all(torch.equal(adapters[n].detach().cpu(), kept[n]) for n in kept)


def test_fp32_encoding_is_sams_own(model):
    """fp32 runs SAM2's ``forward_image`` as it is, bit for bit (parity is checked on fp32)."""
    assert not model.engine.cpu_bf16
    x = torch.randn(
        2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        feats = model.engine.encode(x)
        ref = model.sam.forward_image(x)["backbone_fpn"][-3:]
    for got, want in zip((*feats.high_res, feats.top), ref, strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, want)
