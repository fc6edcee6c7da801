"""Fine-tuning: what trains, what stays, saving, resuming, the loss and its parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_data import GRID, ellipse_frame

import napari_sansa as ns
from conftest import CONFIG, TRAINING_SIZE, training_size_fixtures

weights, model = training_size_fixtures()  # 128 px: fine-tuning at a quarter of the cost


@pytest.fixture(scope="module")
def data():
    return [ellipse_frame(s) for s in range(4)]


def _state(model):
    return {k: v.detach().clone() for k, v in model.sam.state_dict().items()}


def _run(model, data, **kw):
    kw = {"steps": 2, "batch_size": 1, "input_size": GRID, "seed": 0, "validation": 0, **kw}
    return ns.finetune_iter(model, data, **kw)


def test_a_few_steps_change_only_the_adapters_and_not_the_given_model(model, data):
    before = _state(model)
    flags = {n: p.requires_grad for n, p in model.sam.named_parameters()}
    tuned = ns.finetune(model, data, steps=2, batch_size=1, input_size=GRID, lr=1e-3,
                         validation=0)  # fmt: skip
    after = tuned.sam.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(".adapter." in k for k in changed)
    assert any("up_proj" in k for k in changed)
    for k, v in before.items():  # the given model: every tensor, flag and mode as it was
        assert torch.equal(v, model.sam.state_dict()[k])
    assert flags == {n: p.requires_grad for n, p in model.sam.named_parameters()}
    assert not model.sam.training and not tuned.sam.training
    assert tuned is not model and tuned.sam is not model.sam


def test_saved_adapters_hold_adapter_tensors_only_and_load_back(model, data, weights, tmp_path):
    from napari_sansa.core.models.checkpoints import ADAPTER_KEY

    tuned = ns.finetune(model, data, steps=2, batch_size=1, input_size=GRID, lr=1e-3,
                         validation=0)  # fmt: skip
    path = tuned.save_adapters(tmp_path / "tuned.pth")
    saved = torch.load(path, weights_only=True)["model"]
    assert saved and all(ADAPTER_KEY.match(k) for k in saved)
    assert set(saved) == set(dict(tuned.adapter_parameters()))
    back = ns.load_model(config=CONFIG, sam2_checkpoint=weights[0], adapter_checkpoint=path,
                         device="cpu", image_size=TRAINING_SIZE)  # fmt: skip
    img, lab = data[0]
    refs = [ns.Reference(img, [ns.Mask(lab == 1, label=1)])]
    a = tuned.segment(refs, [data[1][0], data[2][0]])
    b = back.segment(refs, [data[1][0], data[2][0]])
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa.logits[1], pb.logits[1])
    original = model.segment(refs, [data[1][0]])
    assert not np.array_equal(original[0].logits[1], a[0].logits[1])


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [None, 0.3])  # SAM2's rates; a rate for every dropout
def test_resume_after_a_stop_ends_where_an_uninterrupted_run_ends(model, data, tmp_path, dropout):
    kw = {"steps": 4, "validation": 0.25, "validate_every": 2, "prompt": "multi", "shots": 2,
          "lr": 1e-3, "dropout": dropout}  # fmt: skip
    whole = _run(model, data, **kw)
    full = list(whole)
    part = _run(model, data, **kw)
    for _ in range(3):  # step 0 (validation) and steps 1, 2
        next(part)
    part.save_state(tmp_path / "run.state")  # tensors and plain values only
    del part  # "killed"
    resumed = _run(model, data, resume=tmp_path / "run.state", **kw)
    rest = list(resumed)
    assert [s.step for s in rest] == [3, 4]
    assert [s.loss for s in rest] == [s.loss for s in full[-2:]]
    assert rest[-1].val_loss == full[-1].val_loss
    a, b = whole.result(), resumed.result()
    for (na, pa), (nb, pb) in zip(a.adapter_parameters(), b.adapter_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_resume_refuses_a_state_of_another_run(model, data):
    state = _run(model, data).state_dict()
    with pytest.raises(ns.InvalidInputError, match="another run.*lr"):
        _run(model, data, lr=3e-4, resume=state)


def test_seed_makes_a_run_repeatable(model, data):
    a = [s.loss for s in _run(model, data, seed=3)]
    b = [s.loss for s in _run(model, data, seed=3)]
    c = [s.loss for s in _run(model, data, seed=4)]
    assert a == b and a != c


def test_stats_schedule_and_validation(model, data):
    run = _run(model, data, steps=4, validation=0.25, validate_every=2, lr=1e-3)
    stats = list(run)
    assert [s.step for s in stats] == [0, 1, 2, 3, 4]
    assert stats[0].loss is None and stats[0].val_loss is not None
    assert [s.val_loss is not None for s in stats] == [True, False, True, False, True]
    lrs = [s.lr for s in stats[1:]]
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[1] == pytest.approx(1e-3 * (1 + np.cos(np.pi / 4)) / 2)
    assert all(s.grad_norm is not None and s.grad_norm > 0 for s in stats[1:])
    assert len(run.val_idx) == 1 and run.val_idx[0] not in run.train_idx
    # the highest held-out IoU picks the adapters (a tie: the earlier, the start first)
    measured = [s for s in stats if s.val_iou is not None]
    best = max(measured, key=lambda s: s.val_iou)
    assert stats[-1].best_step == best.step


@pytest.mark.slow
def test_steps_follow_the_authors_optimiser_recipe(model, data):
    """The authors' step (main.py, engine.py, opts.py), written out: the gradient of the
    step's mean episode loss, its norm over all adapters clipped to 0.1, AdamW (betas
    0.9/0.999, eps 1e-8, weight decay 0) at the cosine rate of the step (T_max = steps,
    stepped after each update). Each step of ``finetune_iter`` is checked from the adapters
    it started from (so float rounding cannot grow over the steps)."""
    steps, lr, batch = 3, 1e-3, 2
    run = _run(model, data, steps=steps, batch_size=batch, shots=2, dropout=0.0, lr=lr)
    drawn, sample = [], run._sample
    run._sample = lambda shot: drawn.append(sample(shot)) or drawn[-1]
    params = [p for _, p in run.named]

    def put(values):
        with torch.no_grad():
            for p, x in zip(params, values, strict=True):
                p.copy_(x)

    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        before = [p.detach().clone() for p in params]
        stats = next(run)
        after = [p.detach().clone() for p in params]
        put(before)  # the gradient where the step started, on the step's episodes
        for p in params:
            p.grad = None
        with run.engine.training(0.0):
            for episode in drawn[(t - 1) * batch : t * batch]:
                focal, dice, _ = run._terms(episode)
                ((focal + dice) / batch).backward()
        grads = [p.grad.detach().clone() for p in params]
        for p in params:
            p.grad = None
        put(after)
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        assert stats.grad_norm == pytest.approx(norm, rel=1e-5)
        assert norm > 0.1  # clipping is at work
        rate = lr * (1 + np.cos(np.pi * (t - 1) / steps)) / 2
        assert stats.lr == pytest.approx(rate, rel=1e-12)
        for i, (p0, g) in enumerate(zip(before, grads, strict=True)):
            g = g * (0.1 / (norm + 1e-6))
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            denom = (v[i] / (1 - 0.999**t)).sqrt() + 1e-8
            want = p0 - rate * (m[i] / (1 - 0.9**t)) / denom
            moved = float((after[i] - p0).abs().max())
            err = float((after[i] - want).abs().max())
            assert err <= 1e-4 * moved + 3e-7 * float(p0.abs().max()), (t, i)
    assert max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True)) > rate / 2


def test_stop_keeps_the_best_state(model, data):
    run = _run(model, data, steps=50, validation=0.25, validate_every=1, lr=1e-3)
    seen = [next(run) for _ in range(3)]  # stop after step 2
    best = max(seen, key=lambda s: s.val_iou)
    tuned = run.result()
    assert run.closed and list(run) == []
    expect = run.best
    assert best.step == run.best_step
    for n, p in tuned.adapter_parameters():
        assert torch.equal(p, expect[n])


def test_fresh_adapters_as_the_authors_initialise_them(weights, data):
    plain = ns.load_model(config=CONFIG, sam2_checkpoint=weights[0], device="cpu",
                          image_size=TRAINING_SIZE)  # fmt: skip
    with pytest.raises(ns.InvalidInputError, match="no adapters.*fresh_adapters=True"):
        _run(plain, data)
    run = _run(plain, data, fresh_adapters=True, stages=(3,), channel_factor=0.25)
    params = dict(run.named)
    blocks = {int(n.split(".blocks.")[1].split(".")[0]) for n in params}
    assert blocks == {10, 11}  # Hiera-tiny's stage 3
    down = params["sam.image_encoder.trunk.blocks.10.adapter.down_proj.weight"]
    assert down.shape == (int(384 * 0.25), 768)  # the block's input width x factor
    assert params["sam.image_encoder.trunk.blocks.11.adapter.down_proj.weight"].shape == (192, 768)
    bound = 1 / np.sqrt(768)  # kaiming_uniform(a=sqrt(5)) on a 768-wide input
    assert float(down.abs().max()) <= bound and float(down.std()) > bound / 3
    for n, p in params.items():
        if "up_proj" in n or n.endswith("down_proj.bias") or "norm_before.bias" in n:
            assert not p.any()
        if "norm_before.weight" in n:
            assert bool((p == 1).all())
    assert run.encoder.first == 10
    list(run)
    assert any(bool(p.any()) for n, p in run.named if "up_proj" in n)


def test_prefix_encoder_gives_the_engine_features(model, data):
    from napari_sansa.core.preprocess import image_to_input
    from napari_sansa.core.training.encoder import PrefixEncoder

    imgs = [ns.to_float_rgb(d[0]) for d in data[:3]]
    batch = torch.stack([image_to_input(x, TRAINING_SIZE, GRID, "cpu") for x in imgs])
    with torch.no_grad():
        want = model.engine.encode(batch)
        enc = PrefixEncoder(model.engine, first_trainable=3, cache_bytes=1 << 30)
        got = enc.encode(["a", "b", "c"], lambda rows: batch[rows])
        again = enc.encode(["c", "a", "c"], lambda rows: pytest.fail("prefix recomputed"))
    for w, g in zip((*want.high_res, want.top), (*got.high_res, got.top), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    torch.testing.assert_close(again.top[1], want.top[0], rtol=0, atol=1e-5)
    assert enc.hits == 3 and enc.misses == 3
    small = PrefixEncoder(model.engine, 3, cache_bytes=enc.nbytes // 3 + 1)  # room for one image
    with torch.no_grad():
        small.encode(["a", "b"], lambda rows: batch[rows])
    assert small.nbytes <= enc.nbytes // 3 + 1 and len(small._cache) == 1


# -- episode_loss ---------------------------------------------------------------------------
def test_episode_loss_is_deterministic_differentiable_and_changes_nothing(model, data):
    ex = [ns.Example(img, lab == 1) for img, lab in data]
    before = _state(model)
    a = ns.episode_loss(model, supports=[ex[0]], query=ex[1], input_size=GRID)
    b = ns.episode_loss(model, supports=[ex[0]], query=ex[1], input_size=GRID)
    assert set(a) == {"focal", "dice"}
    assert torch.equal(a["focal"], b["focal"]) and torch.equal(a["dice"], b["dice"])
    params = dict(model.adapter_parameters())
    grads = torch.autograd.grad(a["focal"] + a["dice"], list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    for k, v in before.items():
        assert torch.equal(v, model.sam.state_dict()[k])
    assert not model.sam.training
    dropout = model.sam.memory_attention.layers[0].dropout1.p
    assert dropout == pytest.approx(0.1)
    c = ns.episode_loss(model, supports=[ex[0]], query=ex[1], input_size=GRID, dropout=None)
    assert not torch.equal(a["focal"], c["focal"])  # SAM2's own dropout is on


def test_episode_loss_counts_frames_by_the_authors_rule(model, data):
    img0, lab0 = data[0]
    img2, lab2 = data[2]
    other = np.zeros_like(lab0, bool)
    other[5:20, 5:25] = True
    query = ns.Example(data[1][0], data[1][1] == 1)
    # mask supports: the first support does not count, its ground truth is not used
    mask_a = ns.episode_loss(model, [ns.Example(img0, lab0 == 1)], query, input_size=GRID)
    mask_b = ns.episode_loss(
        model, [ns.Example(img0, other, prompt=ns.Mask(lab0 == 1))], query, input_size=GRID
    )
    assert torch.equal(mask_a["focal"], mask_b["focal"])
    # with two mask supports the second one counts
    two_a = ns.episode_loss(model, [ns.Example(img0, lab0 == 1), ns.Example(img2, lab2 == 1)],
                            query, input_size=GRID)  # fmt: skip
    two_b = ns.episode_loss(
        model, [ns.Example(img0, lab0 == 1), ns.Example(img2, other, prompt=ns.Mask(lab2 == 1))],
        query, input_size=GRID,
    )  # fmt: skip
    assert not torch.equal(two_a["focal"], two_b["focal"])
    # a box support counts
    rows, cols = np.nonzero(lab0 == 1)
    box = ns.Box((rows.min(), cols.min(), rows.max() + 1, cols.max() + 1))
    box_a = ns.episode_loss(model, [ns.Example(img0, lab0 == 1, prompt=box)], query,
                            input_size=GRID)  # fmt: skip
    box_b = ns.episode_loss(model, [ns.Example(img0, other, prompt=box)], query, input_size=GRID)
    assert not torch.equal(box_a["focal"], box_b["focal"])


def test_focal_and_dice_follow_the_authors_formulas():
    from napari_sansa.core.training.loss import dice_loss, focal_loss

    x = torch.tensor([2.0, -1.0, 0.5, -3.0])
    t = torch.tensor([1.0, 0.0, 0.0, 1.0])
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    pt = p * t + (1 - p) * (1 - t)
    at = 0.25 * t + 0.75 * (1 - t)
    assert float(focal_loss(x, t)) == pytest.approx(float((at * ce * (1 - pt) ** 2).mean()))
    want = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    assert float(dice_loss(x, t)) == pytest.approx(float(want))


# -- support prompts ------------------------------------------------------------------------
def test_box_prompt_merges_overlapping_components_and_keeps_the_largest():
    from napari_sansa.core.training.episodes import draw_prompt

    m = np.zeros((40, 40), bool)
    m[2:6, 2:6] = True  # small, alone: box (2, 2, 6, 6)
    m[10:30, 10] = True  # an L: box x 10..30, y 10..30
    m[29, 10:30] = True
    m[12:16, 25:34] = True  # apart from the L, its box overlaps the L's: merged
    p = draw_prompt(m, "box", np.random.default_rng(0))
    assert p.coords.tolist() == [[10, 10], [34, 30]] and p.labels.tolist() == [2, 3]


def test_point_and_scribble_prompts_lie_in_the_mask():
    from napari_sansa.core.training.episodes import draw_prompt

    m = np.zeros((80, 80), bool)
    m[20:60, 10:70] = True
    rng = np.random.default_rng(1)
    counts = set()
    for _ in range(30):
        p = draw_prompt(m, "point", rng)
        xs, ys = p.coords[:, 0].astype(int), p.coords[:, 1].astype(int)
        assert m[ys, xs].all() and (p.labels == 1).all() and 1 <= len(xs) <= 20
        counts.add(len(xs))
        s = draw_prompt(m, "scribble", rng)
        xs, ys = s.coords[:, 0].astype(int), s.coords[:, 1].astype(int)
        assert m[ys, xs].all() and len(xs) >= 1
    assert len(counts) > 5  # the number of points is random


def test_gpu_memory_decision():
    import math

    from napari_sansa.core.training.memory import cache_budget

    gib = 2**30
    assert cache_budget(2 * gib, 10 * gib, 1 * gib, shots=1, image_size=1024, device="cuda") == gib
    assert cache_budget(8 * gib, 10 * gib, 4 * gib, shots=1, image_size=1024,
                        device="cuda") == int(gib)  # fmt: skip
    with pytest.raises(ns.SansaError, match="needs about 12.0 GiB.*10.0 GiB free.*image_size"):
        cache_budget(12 * gib, 10 * gib, gib, shots=3, image_size=1024, device="cuda")
    with pytest.raises(MemoryError, match="more than the free memory"):
        cache_budget(math.inf, 10 * gib, gib, shots=3, image_size=1024, device="cuda")


def test_a_bf16_autocast_run_trains_repeatably_with_float32_adapters(weights, data, tmp_path):
    """The autocast path CUDA takes by default (bf16), here on the CPU."""
    m = ns.load_model(config=CONFIG, sam2_checkpoint=weights[0], adapter_checkpoint=weights[1],
                      device="cpu", image_size=TRAINING_SIZE, precision="bf16")  # fmt: skip
    assert m.dtype == torch.bfloat16
    runs = [_run(m, data, seed=2) for _ in range(2)]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    losses = [[s.loss for s in run] for run in runs]
    assert losses[0] == losses[1] and all(np.isfinite(losses[0]))
    assert torch.equal(torch.get_rng_state(), before)  # PyTorch's dropout, on a fork
    tuned = runs[0].result()
    assert tuned.dtype == torch.bfloat16
    # the tuned model runs its encoder in bf16 (as a loaded one), but its adapters are
    # saved as training left them, in fp32, not rounded to bf16
    path = tuned.save_adapters(tmp_path / "tuned.pth")
    saved = torch.load(path, weights_only=True)["model"]
    assert saved and all(v.dtype == torch.float32 for v in saved.values())
    assert any((v != v.bfloat16().float()).any() for v in saved.values())
