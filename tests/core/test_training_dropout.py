"""Training's dropout noise on the CPU: its distribution, its seeds, and where it is used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import training_size_fixtures
from napari_sansa.core.training import dropout as D

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_noise_keeps_each_element_with_probability_one_minus_p(p):
    n = 3 * D.CHUNK + 12345  # several chunks and a short one
    noise = D.keep_noise((n,), p, seed=1)
    assert noise.dtype == torch.float32 and noise.shape == (n,)
    kept = noise != 0
    values = torch.unique(noise)
    assert values.tolist() == [0.0, pytest.approx(1 / (1 - p))]
    # the kept fraction: within 5 standard deviations of 1 - p, overall and in each chunk
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(float(kept.float().mean()) - (1 - p)) < 5 * sd
    chunks = kept[: 3 * D.CHUNK].view(3, D.CHUNK)
    sd_chunk = (p * (1 - p) / D.CHUNK) ** 0.5
    assert (chunks.float().mean(1) - (1 - p)).abs().max() < 5 * sd_chunk
    assert not torch.equal(chunks[0], chunks[1])  # each chunk its own stream
    # neighbours independent: P(both kept) = (1 - p)^2
    both = float((kept[:-1] & kept[1:]).float().mean())
    assert abs(both - (1 - p) ** 2) < 10 * sd


def test_keep_noise_repeats_with_its_seed_whatever_the_threads():
    threads = torch.get_num_threads()
    shape = (2, D.CHUNK + 7)
    try:
        torch.set_num_threads(1)
        one = D.keep_noise(shape, 0.1, seed=5)
        torch.set_num_threads(2)
        two = D.keep_noise(shape, 0.1, seed=5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert not torch.equal(one, D.keep_noise(shape, 0.1, seed=6))


def test_keep_noise_takes_its_seed_from_torchs_generator():
    torch.manual_seed(3)
    a = D.keep_noise((1000,), 0.2)
    b = D.keep_noise((1000,), 0.2)  # the generator moved on
    torch.manual_seed(3)
    assert torch.equal(D.keep_noise((1000,), 0.2), a)
    assert not torch.equal(a, b)


def test_keep_noise_writes_into_out_and_refuses_bad_arguments():
    out = torch.full((50,), 7.0)
    noise = D.keep_noise((4, 10), 0.3, seed=2, out=out)
    assert noise.data_ptr() == out.data_ptr() and noise.shape == (4, 10)
    assert torch.equal(noise, D.keep_noise((4, 10), 0.3, seed=2))
    assert torch.equal(out[40:], torch.full((10,), 7.0))  # past the shape: untouched
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            D.keep_noise((3,), p)
    with pytest.raises(ValueError, match="contiguous float32"):
        D.keep_noise((3,), 0.1, out=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="holds 5 elements, the noise needs 6"):
        D.keep_noise((2, 3), 0.1, out=torch.zeros(5))


def test_dropout_layers_in_training_use_the_noise_and_differentiate_through_it():
    from napari_sansa.core.training.attention import _Mode

    x = torch.randn(64, 33, requires_grad=True)
    layer = torch.nn.Dropout(0.25).train()
    torch.manual_seed(11)
    with _Mode():
        y = layer(x)
    torch.manual_seed(11)
    noise = D.keep_noise(x.shape, 0.25)
    assert torch.equal(y, x * noise)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(grad, noise)
    with _Mode():
        assert torch.equal(layer.eval()(x), x)  # not training: no dropout
        assert torch.equal(F.dropout(x, 0.0, True), x)
    x = x.detach()
    for other, inplace in ((x.double(), False), (x.bfloat16(), False), (x, True)):
        torch.manual_seed(12)  # not float32, or in place: PyTorch's own draws
        with _Mode():
            got = F.dropout(other.clone(), 0.5, True, inplace)
        torch.manual_seed(12)
        assert torch.equal(got, F.dropout(other.clone(), 0.5, True, inplace))


def test_a_pool_in_use_keeps_working_when_another_thread_asks_for_another_width():
    # two runs at once (e.g. napari workers, each setting torch's thread count) must not
    # shut down the pool the other is submitting to
    pool = D._executor(2)
    D._executor(3)
    assert pool.submit(int, "4").result() == 4
    assert D._executor(2) is pool


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_draws_noise_without_the_parents_pool_threads():
    code = (
        "import os, signal, torch\n"
        "from napari_sansa.core.training import dropout as D\n"
        "torch.set_num_threads(2)\n"
        "want = D.keep_noise((3 * D.CHUNK,), 0.1, seed=1)\n"  # the pool's threads started
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.alarm(20)\n"  # the old pool would wait for ever
        "    os._exit(0 if torch.equal(D.keep_noise((3 * D.CHUNK,), 0.1, seed=1), want) else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.fixture(scope="module")
def frames():
    from training_data import ellipse_frame

    return [ellipse_frame(s) for s in range(4)]


def test_training_dropout_is_independent_of_torchs_global_generator(model, frames):
    """Another thread drawing from PyTorch's global generator during a step (or a second
    run) neither changes a run's dropout nor is changed by it."""
    from training_data import GRID

    import napari_sansa as ns

    kw = {"steps": 2, "batch_size": 1, "input_size": GRID, "seed": 4, "validation": 0}
    first = ns.finetune_iter(model, frames, **kw)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    losses = [s.loss for s in first]
    assert torch.equal(torch.get_rng_state(), before)  # the global generator: untouched
    seen = []
    real = D.keep_noise

    def busy_neighbour(*a, **k):  # someone else's draws from the global generator
        torch.rand(3)
        seen.append(k.get("generator"))
        return real(*a, **k)

    second = ns.finetune_iter(model, frames, **kw)
    D.keep_noise = busy_neighbour
    try:
        again = [s.loss for s in second]
    finally:
        D.keep_noise = real
    assert again == losses
    assert seen and all(g is second.torch_rng for g in seen)
    # a rate for every dropout (the mask decoder's too, PyTorch's own draws): forked instead
    run = ns.finetune_iter(model, frames, **kw, dropout=0.3)
    assert not run._own_rng and second._own_rng
    torch.manual_seed(0)
    list(run)
    assert torch.equal(torch.get_rng_state(), before)  # forked, and given back


def test_a_run_whose_attention_hooks_are_removed_forks_the_global_generator(model, frames):
    """PyTorch's own dropout then draws: from a fork of the global generator, as on CUDA."""
    from training_data import GRID

    import napari_sansa as ns

    run = ns.finetune_iter(model, frames, steps=1, batch_size=1, input_size=GRID, seed=4,
                           validation=0)  # fmt: skip
    run._kernels.remove()
    assert not run._own_rng
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(run)
    assert torch.equal(torch.get_rng_state(), before)
