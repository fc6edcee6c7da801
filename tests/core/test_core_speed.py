"""Feature caches, batching, out-of-memory fallback, precision and streaming."""

from __future__ import annotations

import os
import shutil
import stat
import warnings

import numpy as np
import pytest
import torch

import napari_sansa as ns
from conftest import load_test_model as _load
from conftest import make_image


class _Counter:
    """Counts the images the encoder sees."""

    def __init__(self, model, monkeypatch):
        self.n = 0
        real = model.engine.encode

        def encode(x):
            self.n += x.shape[0]
            return real(x)

        monkeypatch.setattr(model.engine, "encode", encode)


@pytest.fixture()
def refs(images, disk_mask):
    return [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[70, 30]], label=2)])]


def test_every_part_of_the_signature_is_a_miss(weights, tmp_path, images, refs, monkeypatch):
    cache = tmp_path / "features"
    a = _load(weights, cache_dir=cache)
    count = _Counter(a, monkeypatch)
    targets = [images[1].copy(), images[2]]
    first = a.segment(refs, targets, input_size=128)
    assert count.n == 3
    a.segment(refs, targets, input_size=128)
    assert count.n == 3  # all hits
    changed = targets[0].copy()
    changed[5, 5, 0] ^= 1  # one pixel
    a.segment(refs, [changed], input_size=128)
    assert count.n == 4
    a.segment(refs, targets[:1], input_size=96)  # pre-processing
    assert count.n == 6  # the reference and the target again
    a.segment(refs, targets[:1], input_size=128, intensity_range=(0, 200))
    assert count.n == 8
    # a new model object with the same files shares the disk cache ...
    b = _load(weights, cache_dir=cache)
    count_b = _Counter(b, monkeypatch)
    again = b.segment(refs, targets, input_size=128)
    assert count_b.n == 0
    assert np.abs(again[0].logits[1] - first[0].logits[1]).max() < 1e-4
    # ... but other weights, another precision or another version are misses
    plain = ns.load_model(
        config="sam2_hiera_t",
        sam2_checkpoint=weights[0],
        device="cpu",
        image_size=256,
        cache_dir=cache,
    )
    count_p = _Counter(plain, monkeypatch)
    plain.segment(refs, targets, input_size=128)
    assert count_p.n == 3
    bf = _load(weights, cache_dir=cache, precision="bf16")
    count_bf = _Counter(bf, monkeypatch)
    bf.segment(refs, targets[:1], input_size=128)
    assert count_bf.n == 2
    import napari_sansa

    monkeypatch.setattr(napari_sansa, "__version__", "99.0")
    c = _load(weights, cache_dir=cache)
    count_c = _Counter(c, monkeypatch)
    c.segment(refs, targets[:1], input_size=128)
    assert count_c.n == 2


def test_damaged_or_foreign_disk_entries_are_recomputed(
    weights, tmp_path, images, refs, monkeypatch
):
    cache = tmp_path / "features"
    model = _load(weights, cache_dir=cache, cache_bytes=0)
    want = model.segment(refs, images[1:3], input_size=128)
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == 3
    files[0].write_bytes(b"garbage")  # damaged
    shutil.copyfile(files[2], files[1])  # another image's features under this name
    count = _Counter(model, monkeypatch)
    got = model.segment(refs, images[1:3], input_size=128)
    assert count.n == 2
    for p, q in zip(want, got, strict=True):
        assert np.abs(p.logits[1] - q.logits[1]).max() < 1e-4


def test_unwritable_cache_folder_warns_and_goes_on(weights, tmp_path, images, refs, monkeypatch):
    if os.geteuid() == 0:  # root writes anyway: simulate the folder refusing writes

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(np, "savez", refuse)
    else:
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", stat.S_IRUSR | stat.S_IXUSR)
    model = _load(weights, cache_dir=tmp_path / "ro", cache_bytes=0)
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        preds = model.segment(refs, images[1:3], input_size=128)
    assert len(preds) == 2


def test_full_cache_disk_warns_and_goes_on(weights, tmp_path, images, refs, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    model = _load(weights, cache_dir=tmp_path / "c", cache_bytes=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        preds = model.segment(refs, images[1:4], input_size=128)
    assert len(preds) == 3
    assert sum("cannot be written" in str(w.message) for w in seen) == 1  # said once
    assert not list((tmp_path / "c").rglob("*.partial"))


def test_disk_cache_is_bounded(weights, tmp_path, images, refs):
    model = _load(weights, cache_dir=tmp_path / "c", cache_bytes=0, cache_dir_bytes=3_500_000)
    model.segment(refs, images[1:6], input_size=128)
    total = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*.npz"))
    assert 0 < total <= 3_500_000


def test_batched_and_unbatched_runs_agree(recomputing_model, images, refs):
    one = recomputing_model.segment(refs, images[1:6], batch_size=1)
    many = recomputing_model.segment(refs, images[1:6], batch_size=4)
    for p, q in zip(one, many, strict=True):
        for c in (1, 2):
            assert np.abs(p.logits[c] - q.logits[c]).max() < 1e-4
        assert (p.labels == q.labels).mean() > 0.999


def test_out_of_memory_retries_smaller_batches(weights, images, refs, monkeypatch):
    model = _load(weights, cache_bytes=0)
    want = model.segment(refs, images[1:6], batch_size=1)
    real = model.engine.decode_with_memory
    seen = []

    def tight(feats, memory):
        seen.append(feats.batch)
        if feats.batch > 2 * 2:  # more than two targets (x 2 classes) do not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(feats, memory)

    monkeypatch.setattr(model.engine, "decode_with_memory", tight)
    got = model.segment(refs, images[1:6], batch_size=5)
    assert [p.index for p in got] == [0, 1, 2, 3, 4]
    assert max(seen) == 10 and seen.count(10) == 1  # tried once, then smaller
    for p, q in zip(want, got, strict=True):
        assert np.abs(p.logits[2] - q.logits[2]).max() < 1e-4


def test_out_of_memory_at_batch_size_one_names_the_image(weights, images, refs, monkeypatch):
    model = _load(weights, cache_bytes=0)

    def never(feats, memory):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")

    monkeypatch.setattr(model.engine, "decode_with_memory", never)
    with pytest.raises(MemoryError, match=r"target 0 \(96x128 pixels\) does not fit"):
        model.segment(refs, images[1:3], batch_size=2)


def test_bf16_on_cpu_matches_fp32(weights, images, refs):
    fp32 = _load(weights, precision="fp32", cache_bytes=0)
    bf16 = _load(weights, precision="bf16", cache_bytes=0)
    a = fp32.segment(refs, images[1:4])
    b = bf16.segment(refs, images[1:4])
    for p, q in zip(a, b, strict=True):
        assert (p.labels == q.labels).mean() > 0.95
        assert np.abs(p.probabilities[1] - q.probabilities[1]).mean() < 0.05


def test_a_bad_target_is_raised_after_the_ones_before_it(model, images, refs):
    bad = np.full((20, 20), np.nan)
    got = []
    with pytest.raises(ValueError, match="target 2"):
        for p in model.segment_iter(refs, [images[1], images[2], bad, images[3]], batch_size=2):
            got.append(p.index)
    assert got == [0, 1]


def test_dask_stacks_are_read_frame_by_frame(model, refs):
    da = pytest.importorskip("dask.array")
    import dask

    calls = []

    def frame(i):
        calls.append(i)
        return make_image(100 + i)

    frames = [
        da.from_delayed(dask.delayed(frame)(i), shape=(96, 128, 3), dtype=np.uint8)
        for i in range(12)
    ]
    stack = da.stack(frames)
    gen = model.segment_iter(refs, stack)
    next(gen)
    assert len(calls) <= 4  # only the frames being worked on were read
    rest = list(gen)
    assert len(rest) == 11
    assert sorted(calls) == list(range(12))  # each frame read once, never the whole stack


def test_memory_mapped_tiff_is_read_frame_by_frame(recomputing_model, refs, tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([make_image(200 + i) for i in range(6)]), photometric="rgb")
    mm = tifffile.memmap(path)
    assert isinstance(mm, np.memmap) and mm.shape == (6, 96, 128, 3)

    class FramesOnly:
        """Iterates memory-mapped frames; refuses to be turned into one array."""

        def __init__(self, data):
            self.data = data

        def __len__(self):
            return len(self.data)

        def __iter__(self):
            for i in range(len(self.data)):
                yield self.data[i]

        def __array__(self, *a, **k):
            raise AssertionError("the whole stack was materialised")

    preds = list(recomputing_model.segment_iter(refs, FramesOnly(mm)))
    assert len(preds) == 6
    direct = recomputing_model.segment(refs, [np.array(mm[3])])
    assert np.array_equal(preds[3].labels, direct[0].labels)


class _Decoded:
    """Counts the target-class pairs that go through memory attention + decoder."""

    def __init__(self, model, monkeypatch):
        self.n = 0
        real = model.engine.decode_with_memory

        def decode(feats, memory):
            self.n += feats.batch
            return real(feats, memory)

        monkeypatch.setattr(model.engine, "decode_with_memory", decode)


def test_rerun_decodes_only_the_classes_whose_references_changed(
    weights, images, disk_mask, monkeypatch
):
    model = _load(weights)
    decoded, encoded = _Decoded(model, monkeypatch), _Counter(model, monkeypatch)
    targets = images[1:4]
    before = [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[70, 30]], label=2)])]
    first = model.segment(before, targets, input_size=128)
    assert (decoded.n, encoded.n) == (6, 4)  # 3 targets x 2 classes; 1 reference + 3 targets

    again = model.segment(before, targets, input_size=128, threshold=0.3)
    assert (decoded.n, encoded.n) == (6, 4)  # nothing changed: nothing runs again
    for p, q in zip(first, again, strict=True):
        for c in (1, 2):
            assert np.array_equal(p.logits[c], q.logits[c]) and p.scores[c] == q.scores[c]
        assert np.array_equal(q.labels, p.with_threshold(0.3).labels)

    # class 2's click moves: only class 2 is decoded again, class 1 is reused as it was
    after = [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[20, 100]], label=2)])]
    second = model.segment(after, targets, input_size=128)
    assert decoded.n == 6 + 3 and encoded.n == 4
    fresh = _load(weights, result_cache_bytes=0).segment(after, targets, input_size=128)
    for p, q, f in zip(first, second, fresh, strict=True):
        assert np.array_equal(p.logits[1], q.logits[1])
        assert np.abs(q.logits[2] - f.logits[2]).max() < 1e-4  # what an uncached run gives
        assert np.abs(q.logits[2] - p.logits[2]).max() > 1e-2  # the new click mattered
        assert (q.labels == f.labels).mean() > 0.999

    # a target whose pixels changed is a miss; sequential mode never uses these results
    changed = targets[0].copy()
    changed[0, 0, 0] ^= 1
    model.segment(after, [changed, targets[1]], input_size=128)
    assert decoded.n == 9 + 2
    model.segment(after, targets, input_size=128, mode="sequential")
    assert decoded.n == 11 + 3 * 2


def test_result_cache_is_off_with_the_feature_cache_and_bounded(weights, images, refs, monkeypatch):
    off = _load(weights, cache_bytes=0)
    decoded = _Decoded(off, monkeypatch)
    off.segment(refs, images[1:3], input_size=128)
    off.segment(refs, images[1:3], input_size=128)
    assert decoded.n == 8 and len(off.result_cache) == 0

    one_entry = 64 * 64 * 4 + 4  # logits at a quarter of the 256 px input, and a score
    small = _load(weights, result_cache_bytes=3 * one_entry)
    small.segment(refs, images[1:5], input_size=128)
    assert len(small.result_cache) == 3 and small.result_cache.nbytes <= 3 * one_entry


@pytest.mark.parametrize("mode", ["independent", "sequential"])
def test_cancel_stops_within_a_batch(weights, images, refs, monkeypatch, mode):
    import threading

    model = _load(weights, cache_bytes=0)  # every image really goes through the encoder
    count = _Counter(model, monkeypatch)
    targets = [make_image(300 + i) for i in range(8)]
    # without a cancel token a batch of 8 is encoded as a whole before its first result
    gen = model.segment_iter(refs, targets, mode=mode, batch_size=8)
    next(gen)
    gen.close()
    assert count.n == 1 + (8 if mode == "independent" else 1)
    count.n = 0
    stop = threading.Event()
    got = []
    for pred in model.segment_iter(refs, targets, mode=mode, batch_size=8, cancel=stop):
        got.append(pred.index)
        stop.set()  # e.g. the Stop button, from another thread
    assert got == [0] and count.n == 1 + 1  # the reference and the first target only
    # a callable works too, and a token set before the start runs nothing
    count.n = 0
    assert list(model.segment_iter(refs, targets, mode=mode, cancel=lambda: True)) == []
    assert count.n == 0
    with pytest.raises(ValueError, match="cancel"):
        model.segment_iter(refs, targets, cancel=3)


def test_rerun_reuses_the_reference_memory_of_unchanged_classes(weights, images, monkeypatch):
    model = _load(weights)
    decoded_refs = []
    for name in ("decode_mask_prompt", "decode_sparse_prompt"):
        real = getattr(model.engine, name)

        def spy(feats, *a, _real=real, _name=name):
            decoded_refs.append(_name)
            return _real(feats, *a)

        monkeypatch.setattr(model.engine, name, spy)
    encoded = _Counter(model, monkeypatch)

    def refs(dy):
        boxes = [(10, 10, 40, 50), (50, 20 + dy, 80, 70 + dy), (20, 80, 60, 120)]
        return [
            ns.Reference(im, [ns.Box(b, label=c + 1) for c, b in enumerate(boxes)])
            for im in images[:2]
        ]

    targets = images[2:5]
    model.segment(refs(0), targets, input_size=128)
    assert len(decoded_refs) == 2 * 3 and encoded.n == 2 + 3
    decoded_refs.clear()
    moved = model.segment(refs(8), targets, input_size=128)  # class 2's box moves
    assert len(decoded_refs) == 2 and encoded.n == 5  # class 2 on both references, only
    fresh_model = _load(weights, result_cache_bytes=0)
    fresh = fresh_model.segment(refs(8), targets, input_size=128)
    # the reused reference memory is bit for bit what a fresh run computes ...
    reused = model.prepare_references(refs(8), input_size=128)
    assert len(decoded_refs) == 2  # (all found this time)
    again = fresh_model.prepare_references(refs(8), input_size=128)
    for g, h in zip(reused.groups, again.groups, strict=True):
        assert g.classes == h.classes and sorted(g.entries) == sorted(h.entries)
        for i, e in g.entries.items():
            f = h.entries[i]
            for x, y in ((e.features, f.features), (e.pos, f.pos), (e.obj_ptr, f.obj_ptr)):
                assert torch.equal(x, y)
    for p, f in zip(moved.references, fresh.references, strict=True):
        for c in (1, 2, 3):
            assert np.array_equal(p.logits[c], f.logits[c]) and p.scores[c] == f.scores[c]
    # ... and so are the targets, up to the float rounding of decoding class 2 alone
    # (a batch of one pair) rather than with classes 1 and 3
    for p, f in zip(moved, fresh, strict=True):
        for c in (1, 2, 3):
            assert np.abs(p.logits[c] - f.logits[c]).max() < 1e-4
            assert (p.labels == f.labels).mean() > 0.999
    # sequential mode uses the reused memory as well, and decodes every class as usual
    decoded_refs.clear()
    seq = model.segment(refs(8), targets, input_size=128, mode="sequential")
    assert decoded_refs == []
    want = fresh_model.segment(refs(8), targets, input_size=128, mode="sequential")
    for p, f in zip(seq, want, strict=True):
        assert all(np.array_equal(p.logits[c], f.logits[c]) for c in (1, 2, 3))


def test_disk_cache_removes_old_temporaries_of_killed_writes_only(tmp_path):
    """Temporaries carry the package's mark now (issue 18); the disk cache still removes
    those of writes killed more than a day ago, with or without the mark, and no other."""
    import os
    import time

    from napari_sansa.core.atomic import temporary_path
    from napari_sansa.core.cache import DiskFeatureCache

    cache = DiskFeatureCache(tmp_path)
    bucket = cache.root / "ab"
    bucket.mkdir(parents=True)
    entry = bucket / ("ab" + "0" * 38 + ".npz")
    killed = [temporary_path(entry), bucket / f".{entry.name}.{'1' * 32}.partial"]
    other = [bucket / "notes.partial", bucket / f".{entry.name}.{'1' * 31}.partial"]
    recent = temporary_path(entry)
    old = time.time() - 2 * 86400
    for p in [*killed, *other, recent]:
        p.write_bytes(b"x")
        if p != recent:
            os.utime(p, (old, old))
    cache._entries()
    assert not any(p.exists() for p in killed)
    assert all(p.exists() for p in [*other, recent])
