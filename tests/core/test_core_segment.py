"""What the engine does with references and targets, as a user would notice it."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

import napari_sansa as ns
from conftest import make_image


def _logits(preds, c=1):
    return np.stack([p.logits[c] for p in preds])


def test_segment_returns_labels_probabilities_scores(
    model, images, disk_mask, rect_mask, monkeypatch
):
    ref = ns.Reference(
        images[0],
        [
            ns.Mask(disk_mask, label=1),
            ns.Points([[70, 30], [10, 120]], label=4, positive=[True, False]),
        ],
    )
    preds = model.segment([ref], images[1:4])
    assert len(preds) == 3
    for i, p in enumerate(preds):
        assert p.index == i and not p.is_reference
        assert p.labels.shape == (96, 128) and p.labels.dtype == np.uint8
        assert set(np.unique(p.labels)) <= {0, 1, 4}
        assert set(p.probabilities) == {1, 4}
        prob = p.probabilities[1]
        assert prob.dtype == np.float32 and prob.shape == (96, 128)
        assert prob.min() >= 0 and prob.max() <= 1
        assert all(0.0 <= s <= 1.0 for s in p.scores.values())
        # the fused map is the per-pixel argmax over classes above the threshold
        stack = np.stack([p.probabilities[1], p.probabilities[4]])
        expect = np.where(stack.max(0) > 0.5, np.array([1, 4])[stack.argmax(0)], 0)
        assert np.array_equal(p.labels, expect)

    # a new threshold fuses again from the same numbers: the model does not run
    p = preds[0]
    stack = np.stack([p.probabilities[1], p.probabilities[4]])
    calls = []
    for name in ("encode", "decode_with_memory", "decode_mask_prompt", "decode_sparse_prompt"):
        monkeypatch.setattr(model.engine, name, lambda *a, _n=name: calls.append(_n))
    strict = p.with_threshold(0.9)
    assert strict.logits is p.logits and strict.scores is p.scores
    assert strict.probabilities is p.probabilities  # shared, not computed again
    expect = np.where(stack.max(0) > 0.9, np.array([1, 4])[stack.argmax(0)], 0)
    assert np.array_equal(strict.labels, expect) and calls == []
    assert (strict.labels > 0).sum() < (p.labels > 0).sum()  # 0.9 keeps fewer pixels


def test_decoded_references_show_how_prompts_were_understood(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask, label=2), ns.Box((55, 5, 90, 60), label=3)])
    preds = model.segment([ref], images[1:2])
    (decoded,) = preds.references
    assert decoded.is_reference and decoded.classes == (2, 3)
    # a mask given as a prompt is taken as it is
    inter = ((decoded.labels == 2) & disk_mask).sum()
    union = ((decoded.labels == 2) | disk_mask).sum()
    assert inter / union > 0.9
    assert decoded.scores[2] == 1.0
    same = model.decode_references([ref])
    assert np.array_equal(same[0].labels, decoded.labels)


def test_several_classes_match_each_class_alone(recomputing_model, images, disk_mask, rect_mask):
    prompts = [
        ns.Mask(disk_mask, label=1),
        ns.Points([[70, 30], [75, 40], [10, 10]], label=2, positive=[True, True, False]),
        ns.Box((55, 5, 90, 60), label=3),
    ]
    together = recomputing_model.segment([ns.Reference(images[0], prompts)], images[1:3])
    for p in prompts:
        alone = recomputing_model.segment([ns.Reference(images[0], [p])], images[1:3])
        c = p.label
        assert np.abs(_logits(together, c) - _logits(alone, c)).max() < 1e-4
        assert (
            np.abs(
                np.stack([q.probabilities[c] for q in together])
                - np.stack([q.probabilities[c] for q in alone])
            ).max()
            < 1e-5
        )


def test_independent_targets_do_not_depend_on_each_other(recomputing_model, images, disk_mask):
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    a = recomputing_model.segment(ref, [images[1], images[2], images[3]])
    b = recomputing_model.segment(ref, [images[3], images[5], images[1]])
    c = recomputing_model.segment(ref, [images[1]], batch_size=1)
    d = recomputing_model.segment(ref, [images[2], images[1], images[3]], batch_size=3)
    for other in (b[2], c[0], d[1]):
        assert np.abs(a[0].logits[1] - other.logits[1]).max() < 1e-4
        assert np.array_equal(a[0].labels, other.labels)


def test_sequential_mode_uses_previous_targets(recomputing_model, images, disk_mask):
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    seq = recomputing_model.segment(ref, images[1:4], mode="sequential")
    ind = recomputing_model.segment(ref, images[1:4], mode="independent")
    # the first target sees only the references either way
    assert np.abs(seq[0].logits[1] - ind[0].logits[1]).max() < 1e-4
    # later ones also see the earlier targets
    assert np.abs(seq[2].logits[1] - ind[2].logits[1]).max() > 1e-2
    # and change when an earlier target changes
    seq2 = recomputing_model.segment(ref, [images[4], images[2], images[3]], mode="sequential")
    assert np.abs(seq[1].logits[1] - seq2[1].logits[1]).max() > 1e-2
    ind2 = recomputing_model.segment(ref, [images[4], images[2], images[3]], mode="independent")
    assert np.abs(ind[1].logits[1] - ind2[1].logits[1]).max() < 1e-4


def test_references_matter(model, images, disk_mask, rect_mask):
    a = model.segment([ns.Reference(images[0], [ns.Mask(disk_mask)])], images[1:2])
    b = model.segment([ns.Reference(images[0], [ns.Mask(rect_mask)])], images[1:2])
    two = model.segment(
        [
            ns.Reference(images[0], [ns.Mask(disk_mask)]),
            ns.Reference(images[5], [ns.Mask(rect_mask)]),
        ],
        images[1:2],
    )
    assert np.abs(a[0].logits[1] - b[0].logits[1]).max() > 1e-2
    assert np.abs(a[0].logits[1] - two[0].logits[1]).max() > 1e-2
    assert len(two.references) == 2


def test_class_missing_from_a_reference_uses_only_references_that_have_it(
    recomputing_model, images, disk_mask, rect_mask
):
    refs = [
        ns.Reference(images[0], [ns.Mask(disk_mask, label=1), ns.Mask(rect_mask, label=2)]),
        ns.Reference(images[5], [ns.Mask(rect_mask, label=2)]),
    ]
    both = recomputing_model.segment(refs, images[1:3])
    only1 = recomputing_model.segment(refs[:1], images[1:3])
    assert np.abs(_logits(both, 1) - _logits(only1, 1)).max() < 1e-4  # class 1 has one reference
    assert np.abs(_logits(both, 2) - _logits(only1, 2)).max() > 1e-2  # class 2 has two


def test_images_of_different_sizes_and_kinds(model, disk_mask):
    ref = ns.Reference(make_image(0), [ns.Mask(disk_mask)])
    targets = [
        make_image(1, shape=(50, 70)),
        make_image(2, shape=(130, 40), rgb=False),
        np.dstack([make_image(3), np.full((96, 128), 255, np.uint8)]),  # RGBA
        (make_image(4, rgb=False).astype(np.uint16) * 200),
        make_image(5).astype(np.float32) / 255.0,
    ]
    preds = model.segment([ref], targets)
    assert [p.labels.shape for p in preds] == [(50, 70), (130, 40), (96, 128), (96, 128), (96, 128)]
    rgb = model.segment([ref], [make_image(3)])
    assert np.array_equal(preds[2].labels, rgb[0].labels)  # alpha is dropped


def test_inputs_are_never_modified(model, images, disk_mask):
    img = images[0].copy()
    mask = disk_mask.astype(np.uint8) * 5
    coords = np.array([[70.0, 30.0]])
    targets = [images[1].copy(), images[2].astype(np.uint16)]
    before = [img.copy(), mask.copy(), coords.copy(), *(t.copy() for t in targets)]
    ref = ns.Reference(img, [ns.Mask(mask, label=1), ns.Points(coords, label=2)])
    model.segment([ref], targets, input_size=64)
    model.segment([ref], targets, mode="sequential", intensity_range=(10, 200))
    for a, b in zip(before, [img, mask, coords, *targets], strict=True):
        assert np.array_equal(a, b)


def test_generator_yields_each_target_when_done_and_can_stop(model, images, disk_mask):
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    seen = []

    def lazy_targets():
        for i in range(1, 6):
            seen.append(i)
            yield images[i]

    before = set(threading.enumerate())
    gen = model.segment_iter(ref, lazy_targets())
    first = next(gen)
    assert first.index == 0 and len(seen) <= 3  # read ahead, but only a little
    second = next(gen)
    assert second.index == 1
    readers = [t for t in set(threading.enumerate()) - before if t.name.startswith("napari-sansa")]
    assert readers  # the targets are read on background threads ...
    gen.close()
    for t in readers:
        t.join(timeout=30)  # (a bound for a broken build, not a timing)
    assert not any(t.is_alive() for t in readers)  # ... which closing the generator ends
    stopped = list(seen)
    assert len(stopped) <= 4  # nothing more was read after the stop ...
    with pytest.raises(StopIteration):
        next(gen)
    assert seen == stopped  # ... and nothing is read later
    # include_references: references first
    items = list(model.segment_iter(ref, images[1:3], include_references=True))
    assert [(p.is_reference, p.index) for p in items] == [(True, 0), (False, 0), (False, 1)]


def test_each_image_is_encoded_once_per_call(weights, images, disk_mask, rect_mask, monkeypatch):
    import napari_sansa as ns

    sam2, adapters = weights
    m = ns.load_model(
        config="sam2_hiera_t",
        sam2_checkpoint=sam2,
        adapter_checkpoint=adapters,
        device="cpu",
        image_size=256,
        cache_bytes=0,
    )
    encoded = []
    real = m.engine.encode
    monkeypatch.setattr(m.engine, "encode", lambda x: (encoded.append(x.shape[0]), real(x))[1])
    refs = [
        ns.Reference(
            images[0],
            [
                ns.Mask(disk_mask, label=1),
                ns.Box((55, 5, 90, 60), label=2),
                ns.Points([[10, 10]], label=3),
            ],
        ),
        ns.Reference(images[5], [ns.Mask(rect_mask, label=1)]),
    ]
    m.segment(refs, images[1:5], batch_size=2)
    assert sum(encoded) == 6  # 2 references + 4 targets, whatever the number of classes


def test_feature_cache_makes_reruns_skip_the_encoder(
    model, images, disk_mask, rect_mask, monkeypatch
):
    ref1 = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    model.segment(ref1, images[1:3], input_size=128)
    calls = []
    real = model.engine.encode
    monkeypatch.setattr(model.engine, "encode", lambda x: (calls.append(x.shape[0]), real(x))[1])
    # new prompts, same images and settings: nothing is encoded again
    ref2 = [ns.Reference(images[0], [ns.Mask(rect_mask), ns.Points([[10, 10]], label=2)])]
    model.segment(ref2, images[1:3], input_size=128)
    assert calls == []
    # another pre-processing setting is another entry
    model.segment(ref2, images[1:2], input_size=None)
    assert sum(calls) == 2


def test_two_shot_and_many_targets_in_sequence_stay_bounded(
    model, images, disk_mask, rect_mask, monkeypatch
):
    refs = [
        ns.Reference(images[0], [ns.Mask(disk_mask)]),
        ns.Reference(images[5], [ns.Mask(rect_mask)]),
    ]
    kept, attended = [], []
    gather, decode = model.engine.gather, model.engine.decode_with_memory

    def spy_gather(entries, t):
        kept.append((t, sorted(entries)))
        return gather(entries, t)

    def spy_decode(feats, memory):
        attended.append((memory[0].shape[0], memory[2]))
        return decode(feats, memory)

    monkeypatch.setattr(model.engine, "gather", spy_gather)
    monkeypatch.setattr(model.engine, "decode_with_memory", spy_decode)
    targets = [images[1 + i % 4] for i in range(20)]
    preds = list(model.segment_iter(refs, targets, mode="sequential", input_size=64))
    assert len(preds) == 20 and [p.index for p in preds] == list(range(20))
    # target j is episode frame t = 2 + j; it keeps the first reference and the 15 frames
    # before it (the most object pointers SAM2 uses), nothing older
    assert [t for t, _ in kept] == [2 + j for j in range(20)]
    for t, frames in kept:
        assert frames == [0, *range(max(1, t - 15), t)]
    # and attends to 7 memories and at most 16 pointers (4 tokens each), however long
    tokens = (256 // 16) ** 2
    for n, n_ptr in attended:
        assert n_ptr <= 16 * 4 and n - n_ptr <= 7 * tokens
    assert attended[-1] == (7 * tokens + 16 * 4, 16 * 4)


def test_tiny_mask_that_vanishes_is_reported(model, images):
    m = np.zeros((96, 128), bool)
    m[3, 3] = True
    with pytest.raises(ValueError, match="disappears"):
        model.segment([ns.Reference(images[0], [ns.Mask(m)])], images[1:2], input_size=16)


def test_prepared_references_are_reusable_and_picklable(
    recomputing_model, weights, images, disk_mask
):
    import pickle

    refs = [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[70, 30]], label=2)])]
    direct = recomputing_model.segment(refs, images[1:3], input_size=128)
    memory = recomputing_model.prepare_references(refs, input_size=128)
    assert memory.classes == (1, 2) and len(memory.decoded) == 1
    shipped = pickle.loads(pickle.dumps(memory))
    for mem in (memory, shipped):
        for mode in ("independent", "sequential"):
            again = recomputing_model.segment(mem, images[1:3], mode=mode)
            want = (
                direct
                if mode == "independent"
                else recomputing_model.segment(refs, images[1:3], mode=mode, input_size=128)
            )
            for p, q in zip(want, again, strict=True):
                assert np.abs(p.logits[2] - q.logits[2]).max() < 1e-5
    with pytest.raises(ValueError, match="input_size=128"):
        recomputing_model.segment(memory, images[1:2], input_size=640)
    other = ns.load_model(
        config="sam2_hiera_t", sam2_checkpoint=weights[0], device="cpu", image_size=256
    )
    with pytest.raises(ValueError, match="another model"):
        other.segment(memory, images[1:2])


def _shifted_masks(disk_mask, n):
    return [np.roll(disk_mask, 4 * i, axis=1) for i in range(n)]


def _memory_inputs(model, monkeypatch):
    """Records what memory attention gets: (memories, object-pointer tokens) per call."""
    seen = []
    real = model.engine.decode_with_memory

    def spy(feats, memory):
        mem, _pos, n_ptr = memory
        seen.append((mem[:-n_ptr], mem[-n_ptr:]))
        return real(feats, memory)

    monkeypatch.setattr(model.engine, "decode_with_memory", spy)
    return seen


def _nine_references(images, disk_mask, changed=None):
    masks = _shifted_masks(disk_mask, 9)
    if changed is not None:
        masks[changed] = np.roll(masks[changed], 12, axis=0)
    return [ns.Reference(images[i % 6], [ns.Mask(m)]) for i, m in enumerate(masks)]


def test_more_than_seven_references_reach_targets_through_pointers_only(
    model, images, disk_mask, monkeypatch
):
    seen = _memory_inputs(model, monkeypatch)

    def run(changed: int | None):
        seen.clear()
        with pytest.warns(UserWarning, match=r"class 1: references \[1, 2\] only through"):
            memory = model.prepare_references(
                _nine_references(images, disk_mask, changed), input_size=128
            )
        preds = model.segment(memory, images[1:3])
        return memory, preds, *seen[0]

    memory, base, base_mem, base_ptr = run(None)
    # the authors' rule: frame 0 and the last six are memories; all nine give pointers
    assert memory.pointer_only == {1: (1, 2)} and memory.unused == {}
    n_tokens = (256 // 16) ** 2  # top-level features of the 256 px model: 16x16
    assert base_mem.shape[0] == 7 * n_tokens and base_ptr.shape[0] == 9 * 4
    for i in (1, 2):
        _, preds, mem, ptr = run(i)
        assert torch.equal(mem, base_mem)  # reference i is not among the memories ...
        assert not torch.equal(ptr, base_ptr)  # ... only its pointer changed ...
        assert np.abs(preds[0].logits[1] - base[0].logits[1]).max() > 0  # ... and matters
    _, _, mem, ptr = run(3)  # a reference among the last six is a memory
    assert not torch.equal(mem, base_mem)
    seven = _nine_references(images, disk_mask)[:7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.prepare_references(seven, input_size=128).pointer_only == {}


def test_memory_frames_spread_puts_references_spread_over_the_list_in_memory(
    model, images, disk_mask, monkeypatch
):
    seen = _memory_inputs(model, monkeypatch)

    def memory_inputs(changed):
        seen.clear()
        with pytest.warns(UserWarning, match=r"references \[2, 6\] only through"):
            memory = model.prepare_references(
                _nine_references(images, disk_mask, changed),
                input_size=128,
                memory_frames="spread",
            )
        model.segment(memory, images[1:2])
        return memory, *seen[0]

    memory, base_mem, base_ptr = memory_inputs(None)
    assert memory.pointer_only == {1: (2, 6)}  # 0, 1, 3, 4, 5, 7, 8 are memories
    _, mem, _ = memory_inputs(1)
    assert not torch.equal(mem, base_mem)  # reference 1 is a memory now
    _, mem, ptr = memory_inputs(2)
    assert torch.equal(mem, base_mem) and not torch.equal(ptr, base_ptr)
    with pytest.raises(ValueError, match="memory_frames"):
        model.prepare_references(_nine_references(images, disk_mask), memory_frames="first")
