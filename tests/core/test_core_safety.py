"""Bad input and damaged files on the engine's side: the disk feature cache and scribbles.

The disk cache only ever touches its own entries, and a bad entry (tampered, truncated,
foreign) is a miss that is dropped and recomputed: the prediction is the one without a
cache. Scribbles become a bounded number of clicks; absurd prompts are refused.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import napari_sansa as ns
from napari_sansa.core import cache as cache_mod
from napari_sansa.core.cache import DiskFeatureCache, FeatureCache
from napari_sansa.core.preprocess import densify_path, sparse_prompts_to_input


@pytest.fixture(scope="module")
def refs(images, disk_mask):
    return [ns.Reference(images[0], [ns.Mask(disk_mask), ns.Points([[70, 30]], label=2)])]


@pytest.fixture(scope="module")
def uncached(model, refs, images):
    """The prediction without any feature cache."""
    saved = model.feature_cache
    model.feature_cache = FeatureCache(0)
    try:
        return model.segment(refs, images[1:3])
    finally:
        model.feature_cache = saved


def _disk_only(model, monkeypatch, folder, max_bytes=10 << 30) -> DiskFeatureCache:
    disk = DiskFeatureCache(folder, max_bytes)
    monkeypatch.setattr(model, "feature_cache", FeatureCache(0, disk))
    monkeypatch.setattr(model, "result_cache", FeatureCache(0))  # every run reads features
    return disk


def _same(preds, want):
    for p, q in zip(preds, want, strict=True):
        assert p.classes == q.classes
        for c in q.classes:
            assert np.isfinite(p.logits[c]).all()
            assert np.abs(p.logits[c] - q.logits[c]).max() < 1e-4
        assert np.array_equal(p.labels, q.labels)


def _snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


# -- the cache touches nothing it did not write ------------------------------------------
def test_disk_cache_never_counts_or_deletes_files_it_did_not_write(
    model, monkeypatch, tmp_path, refs, images, uncached
):
    folder = tmp_path / "my-data"
    (folder / "sub").mkdir(parents=True)
    np.savez(folder / "embeddings.npz", a=np.arange(100_000))  # a user's own .npz files
    np.savez(folder / "sub" / "features.npz", b=np.ones((300, 300)))
    (folder / "notes.txt").write_text("keep me")
    # files that look like the cache's own but were not written by it
    (folder / "ab").mkdir()
    (folder / "ab" / ("ab" + "0" * 38 + ".npz")).write_bytes(b"user bytes")
    inner = folder / cache_mod.SUBFOLDER / "cd"
    inner.mkdir(parents=True)
    np.savez(inner / ("cd" + "1" * 38 + ".npz"), key=np.array("not ours"), h0=np.zeros(3))
    (folder / cache_mod.SUBFOLDER / "readme.txt").write_text("also mine")
    before = _snapshot(folder)

    for max_bytes in (1, 1 << 20):  # tiny: every entry of its own is evicted at once
        _disk_only(model, monkeypatch, folder, max_bytes)
        _same(model.segment(refs, images[1:3]), uncached)
        _same(model.segment(refs, images[1:4])[:2], uncached)
        after = _snapshot(folder)
        assert {k: after.get(k) for k in before} == before  # every user file, byte for byte
        own = [k for k in after if k not in before]
        own_bytes = sum((folder / k).stat().st_size for k in own)
        assert own_bytes <= max_bytes
        assert all(k.startswith(cache_mod.SUBFOLDER + "/") for k in own)


def test_disk_cache_still_evicts_its_own_oldest_entries(model, monkeypatch, tmp_path, refs, images):
    disk = _disk_only(model, monkeypatch, tmp_path / "c")
    model.segment(refs, images[1:2])
    one = max(p.stat().st_size for p in disk.root.rglob("*.npz"))
    _disk_only(model, monkeypatch, tmp_path / "c", max_bytes=int(2.5 * one))
    model.segment(refs, images[1:6])
    entries = list((tmp_path / "c").rglob("*.npz"))
    assert len(entries) == 2 and sum(p.stat().st_size for p in entries) <= 2.5 * one


# -- a bad entry is a miss, dropped and recomputed -----------------------------------------
def _fields(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write(path, fields, forge: bool):
    """Rewrite an entry; ``forge`` recomputes its checksum as the cache would."""
    if forge:
        arrays = (fields["h0"], fields["h1"], fields["top"])
        fields["sum"] = np.array(
            cache_mod._entry_sum(str(fields["key"]), str(fields["dtype"]), arrays)
        )
    with open(path, "wb") as fh:
        np.savez(fh, **fields)


def _crop_top(f):
    f["top"] = f["top"][:, :, :8, :8].copy()


def _bogus_dtype(f):
    f["dtype"] = np.array("torch.float32,bogus")


def _mislabelled_dtype(f):
    f["dtype"] = np.array("torch.bfloat16,torch.bfloat16,torch.bfloat16")


def _nan(f):
    f["top"] = np.full_like(f["top"], np.nan)


def _one_inf(f):
    f["h0"] = f["h0"].copy()
    f["h0"][0, 3, 5, 7] = np.inf


def _other_key(f):
    f["key"] = np.array(str(f["key"]) + "-other")


def _no_checksum(f):  # an entry in the format of napari-sansa 0.1
    f.pop("sum", None)


TAMPER = {
    "wrong shapes": (_crop_top, False),
    "wrong shapes, checksum forged": (_crop_top, True),
    "bogus dtype string": (_bogus_dtype, False),
    "bogus dtype string, checksum forged": (_bogus_dtype, True),
    "dtype names that do not fit the arrays, forged": (_mislabelled_dtype, True),
    "NaN arrays": (_nan, False),
    "NaN arrays, checksum forged": (_nan, True),
    "one infinite value, checksum forged": (_one_inf, True),
    "key mismatch": (_other_key, True),
    "no checksum": (_no_checksum, False),
}


@pytest.mark.parametrize("how", list(TAMPER))
def test_tampered_entries_are_recomputed(model, monkeypatch, tmp_path, refs, images, uncached, how):
    change, forge = TAMPER[how]
    disk = _disk_only(model, monkeypatch, tmp_path / "c")
    model.segment(refs, images[1:2])
    entries = sorted(disk.root.rglob("*.npz"))
    assert len(entries) == 2  # the reference and the target
    for path in entries:
        fields = _fields(path)
        change(fields)
        _write(path, fields, forge)
    _same(model.segment(refs, images[1:2]), uncached[:1])
    # each bad entry was replaced by the recomputed features, which read back as a hit
    keys = [str(_fields(p)["key"]) for p in entries]
    assert all(disk.get(k) is not None for k in keys if not k.endswith("-other"))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_entry_files_are_recomputed(
    model, monkeypatch, tmp_path, refs, images, uncached, how
):
    disk = _disk_only(model, monkeypatch, tmp_path / "c")
    model.segment(refs, images[1:2])
    for path in disk.root.rglob("*.npz"):
        data = path.read_bytes()
        path.write_bytes(
            {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"x" * 999}[how]
        )
    _same(model.segment(refs, images[1:2]), uncached[:1])


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_a_truncated_entry_leaves_no_file_open(tmp_path, cut):
    # np.load kept its own file open when the zip directory could not be read
    import gc
    import warnings

    arrays = (np.zeros((1, 4, 16, 16), np.float32), np.zeros((1, 8, 8, 8), np.float32),
              np.zeros((1, 32, 4, 4), np.float32))  # fmt: skip
    dtypes = "torch.float32,torch.float32,torch.float32"
    disk = DiskFeatureCache(tmp_path)
    for key in ("a", "b"):
        disk.put(key, arrays, dtypes)
    bad = disk._path("b")
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * cut)])
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = DiskFeatureCache(tmp_path)  # scans the folder (each entry's stored key) ...
        fresh.put("c", arrays, dtypes)
        assert fresh.get("b") is None  # ... and drops the bad entry
        assert fresh.get("a") is not None
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks
    assert not bad.exists()


# -- scribbles and clicks ------------------------------------------------------------------
def _reference_densify(xy, spacing=1.0):
    """The sampling of napari-sansa 0.1, segment by segment (what normal scribbles keep)."""
    out = [xy[:1]]
    for a, b in zip(xy[:-1], xy[1:], strict=True):
        n = max(int(np.ceil(np.linalg.norm(b - a) / spacing)), 1)
        out.append(a + (b - a) * (np.arange(1, n + 1, dtype=np.float64)[:, None] / n))
    return np.concatenate(out, axis=0)


def test_normal_scribbles_are_sampled_as_before():
    r = np.random.default_rng(1)
    for _ in range(200):
        xy = r.random((int(r.integers(2, 12)), 2)) * float(r.choice([2.0, 40.0, 300.0]))
        xy[r.random(len(xy)) < 0.2] = xy[0]  # repeated vertices too
        assert np.array_equal(densify_path(xy), _reference_densify(xy))


def test_huge_scribble_gives_a_bounded_number_of_clicks():
    from napari_sansa.core.preprocess import MAX_SCRIBBLE_POINTS

    r = np.random.default_rng(0)
    path = r.random((10_000, 2)) * [95, 127]  # 10000 random vertices on a 96x128 image
    coords, labels = sparse_prompts_to_input([ns.Scribble(path)], hw=(96, 128), image_size=1024)
    assert len(coords) == MAX_SCRIBBLE_POINTS and (labels == 1).all()
    xy = np.stack([path[:, 1] * 1024 / 128, path[:, 0] * 1024 / 96], axis=1)
    assert np.allclose(coords[0], xy[0]) and np.allclose(coords[-1], xy[-1])  # both ends kept
    steps = np.linalg.norm(np.diff(coords.astype(np.float64), axis=0), axis=1)
    length = np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()
    assert steps.max() <= length / (MAX_SCRIBBLE_POINTS - 1) * 1.001  # spread evenly
    same_spot = densify_path(np.zeros((MAX_SCRIBBLE_POINTS + 5, 2)))
    assert same_spot.shape == (1, 2)


def test_huge_scribble_runs(model, images, disk_mask):
    path = np.random.default_rng(2).random((10_000, 2)) * [95, 127]
    ref = ns.Reference(images[0], [ns.Scribble(path)])
    (pred,) = model.segment([ref], images[1:2])
    assert np.isfinite(pred.logits[1]).all()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ns.Scribble(np.zeros((100_001, 2))), "100001 given, at most 100000"),
        (lambda: ns.Points(np.zeros((10_001, 2))), "10001 given, at most 10000"),
        (lambda: ns.Scribble([[1.0, 2.0], [np.nan, 3.0]]), "NaN"),
        (lambda: ns.Scribble([[1.0, 2.0], [np.inf, 3.0]]), "NaN or infinite"),
    ],
)
def test_absurd_sparse_prompts_are_refused(make, match):
    with pytest.raises(ns.InvalidInputError, match=match):
        make()
