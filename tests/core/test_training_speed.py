"""Fine-tuning's faster paths give what the plain ones give: the memory attention's
kernel, the frozen prefix cache, one decoder pass per mask support."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from training_data import GRID, ellipse_frame

import napari_sansa as ns
from conftest import TRAINING_SIZE, training_size_fixtures

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.fixture(scope="module")
def data():
    return [ellipse_frame(s) for s in range(4)]


def _qkv(lq=37, lk=41, e=16, heads=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, n, e, generator=g, requires_grad=True) for n in (lq, lk, lk)]


def _grads(out, inputs):
    return torch.autograd.grad(out, inputs, torch.linspace(-1, 1, out.numel()).view_as(out))


def test_math_attention_without_dropout_is_the_math_kernel():
    from napari_sansa.core.training.attention import Scratch, _Mode

    q, k, v = _qkv()
    with sdpa_kernel([SDPBackend.MATH]):
        want = F.scaled_dot_product_attention(q, k, v)
    want_grads = _grads(want, (q, k, v))
    for scratch in (None, Scratch()):
        with _Mode(scratch):
            got = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        assert got.grad_fn.name().startswith("MathAttention")
        assert torch.equal(got, want)  # the same operations
        for g, w in zip(_grads(got, (q, k, v)), want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_math_attention_drops_weights_with_its_noise_and_differentiates_through_them(p):
    from napari_sansa.core.training.attention import Scratch, _Mode
    from napari_sansa.core.training.dropout import keep_noise

    q, k, v = _qkv(heads=2)
    torch.manual_seed(7)
    noise = keep_noise((2, 2, 37, 41), p)  # what the attention draws from this seed
    attn = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    want = (attn * noise) @ v
    want_grads = _grads(want, (q, k, v))
    for scratch in (None, Scratch()):
        torch.manual_seed(7)
        with _Mode(scratch):
            got = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        for g, w in zip(_grads(got, (q, k, v)), want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    torch.manual_seed(8)
    with _Mode():
        other = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    assert not torch.allclose(other, want)  # another seed, other weights dropped


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (True, False, True)])  # fmt: skip
def test_math_attention_sharing_a_scratch_over_several_calls_before_their_backward(needs):
    # a step's frames: several attentions (of two sizes: the buffer grows) run forward,
    # then one backward; each gradient only for the inputs that ask for it
    from napari_sansa.core.training.attention import Scratch, _Mode
    from napari_sansa.core.training.dropout import keep_noise

    small = [t.detach().requires_grad_(n) for t, n in zip(_qkv(heads=2), needs, strict=True)]
    large = [t.detach().requires_grad_(n) for t, n in zip(_qkv(50, 90, seed=1), needs, strict=True)]
    calls = (small, large, small)
    torch.manual_seed(4)
    with _Mode(Scratch()):
        got = [F.scaled_dot_product_attention(*c, dropout_p=0.2) for c in calls]
    torch.manual_seed(4)
    want = []
    for q, k, v in calls:
        noise = keep_noise((*q.shape[:3], k.shape[2]), 0.2)
        want.append((torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1) * noise) @ v)
    inputs = [t for c in (small, large) for t in c if t.requires_grad]

    def grads(outs):
        return torch.autograd.grad(sum((o * o.detach().cos()).sum() for o in outs), inputs)

    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    for g, w in zip(grads(got), grads(want), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_a_cpu_training_step_draws_the_memory_attentions_dropout_on_every_core(
    model, data, monkeypatch
):
    from napari_sansa.core.training import attention

    calls = []
    for name in ("keep_noise", "dropout"):
        real = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _r=real, _n=name, **kw: (
            calls.append(_n), _r(*a, **kw))[1])  # fmt: skip
    run = ns.finetune_iter(model, data, steps=1, batch_size=1, input_size=GRID, seed=0,
                           validation=0)  # fmt: skip
    next(run)  # SAM2's default dropout (0.1): its attention weights and its layers
    assert {"keep_noise", "dropout"} <= set(calls)


def test_math_attention_leaves_other_calls_to_the_math_kernel():
    from napari_sansa.core.training.attention import _plain_call

    q, k, v = _qkv()
    mask = torch.ones(37, 41, dtype=torch.bool)
    assert _plain_call((q, k, v), {}) is not None
    assert _plain_call((q, k, v), {"scale": 0.5})[4] == 0.5
    assert _plain_call((q, k, v, mask), {}) is None
    assert _plain_call((q, k, v), {"is_causal": True}) is None
    assert _plain_call((q.double(), k.double(), v.double()), {}) is None
    with sdpa_kernel([SDPBackend.MATH]):
        want = F.scaled_dot_product_attention(q, k, v)
    from napari_sansa.core.training.attention import _Mode

    with _Mode():
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(masked, want)  # an all-true mask: the same attention
    with _Mode():  # every weight dropped: the math kernel's zeros, not an error
        dropped = F.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    assert torch.equal(dropped, torch.zeros_like(want))


def test_training_step_without_dropout_matches_the_math_kernel_step(model, data):
    from napari_sansa.core.training.attention import KernelWhileTraining

    kw = {"steps": 2, "batch_size": 1, "input_size": GRID, "seed": 3, "dropout": 0.0,
          "validation": 0}  # fmt: skip
    ours = ns.finetune_iter(model, data, **kw)
    plain = ns.finetune_iter(model, data, **kw)
    plain._kernels.remove()
    KernelWhileTraining(plain.engine.memory_attention)
    for a, b in zip(ours, plain, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-6)
    for (n, pa), (_, pb) in zip(ours.named, plain.named, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=n)


def test_prefix_cache_keeps_the_decoders_high_resolution_maps(model, data):
    from napari_sansa.core.preprocess import image_to_input
    from napari_sansa.core.training.encoder import PrefixEncoder

    enc = PrefixEncoder(model.engine, first_trainable=3)
    assert enc.frozen == {0, 1}  # SAM2's two levels without top-down features
    batch = torch.stack([image_to_input(ns.to_float_rgb(data[0][0]), TRAINING_SIZE, GRID, "cpu")])
    with torch.no_grad():
        got = enc.encode(["a"], lambda rows: batch[rows])
        want = model.engine.encode(batch)
    (state, levels), _size = enc._cache["a"]
    assert [t.shape for t in levels] == [t.shape for t in want.high_res]
    assert enc.split and len(state) == 2  # block 3's norm2 input and its frozen output
    for g, w in zip((*got.high_res, got.top), (*want.high_res, want.top), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    late = PrefixEncoder(model.engine, first_trainable=1)  # stage 1 trains: level 1 is not frozen
    assert late.frozen == {0}


def test_a_counted_mask_support_runs_the_decoder_once(model, data):
    from napari_sansa.core.preprocess import image_to_input, mask_to_input
    from napari_sansa.core.training.loss import EpisodeInput, run_episode

    engine = model.engine
    images = [image_to_input(ns.to_float_rgb(d[0]), TRAINING_SIZE, GRID, "cpu") for d in data[:3]]
    prompts = [("mask", mask_to_input(d[1] == 1, TRAINING_SIZE, GRID, "cpu")) for d in data[:2]]
    episode = EpisodeInput(prompts, [torch.zeros(GRID, GRID)] * 3, skip_first=True)
    calls = []
    hook = model.engine.mask_decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            preds = run_episode(engine, engine.encode(torch.stack(images)), episode)
    finally:
        hook.remove()
    assert preds[0] is None and preds[1] is not None and preds[2] is not None
    assert len(calls) == 3  # one pass per support (pointer and mask), one for the query


def test_scratch_is_float32_whatever_torchs_default_dtype():
    from napari_sansa.core.training.attention import Scratch

    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        scratch = Scratch()
        got = scratch.get((3, 4))
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and got.shape == (3, 4)
