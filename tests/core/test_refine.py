"""Objects refined by SAM2 box prompts in a run (``instances={"refine": True}``):
untiled and tiled, each image (or tile) encoded once, and the same result as
:func:`napari_sansa.refine_objects` after the run."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sansa as ns
from conftest import load_test_model


@pytest.fixture(scope="module")
def uncached_model(weights):
    """No feature cache (as ``segment_dataset`` runs): the run's features are the only ones."""
    return load_test_model(weights, cache_bytes=0)


# Objects of at least 10 pixels (the default): the random tiny model's class maps hold
# hundreds of specks below that, each one a decoder pass when refined (a tiled target gave
# 2500 objects with min_size=0), which tests of the refinement's plumbing do not need.
MIN_SIZE = 10


def _count_encodings(model, monkeypatch) -> list[int]:
    """Images per call of the image encoder, from now on."""
    calls: list[int] = []
    encode = model.engine.encode
    monkeypatch.setattr(model.engine, "encode", lambda x: calls.append(len(x)) or encode(x))
    return calls


def _check_refined(refined, pred):
    assert refined.shape == pred.objects.shape and refined.dtype == pred.objects.dtype
    assert set(np.unique(refined)) <= set(np.unique(pred.objects))  # ids kept
    assert not refined[pred.labels == 0].any()  # nothing outside the class map
    for i in np.unique(refined[refined > 0]):
        assert len(np.unique(pred.labels[refined == i])) == 1  # one class an object


@pytest.mark.slow
@pytest.mark.parametrize("tiles", [{}, {"tile_size": 80, "halo": 8}], ids=["untiled", "tiled"])
def test_refine_in_a_run_encodes_each_image_once(
    uncached_model, model, images, disk_mask, rect_mask, monkeypatch, tiles
):
    refs = [ns.Reference(images[0], [ns.Mask(disk_mask, 1), ns.Mask(rect_mask, 2)])]
    targets = [images[4]] if tiles else [images[1], images[2], images[3]]
    calls = _count_encodings(uncached_model, monkeypatch)
    plain = uncached_model.segment(
        refs, targets, instances={"min_size": MIN_SIZE}, batch_size=2, **tiles
    )
    n_plain = sum(calls)
    calls.clear()
    opts = {"min_size": MIN_SIZE, "refine": True}
    refined = uncached_model.segment(refs, targets, instances=opts, batch_size=2, **tiles)
    # the references and every target (or tile) encoded once, as without refinement
    assert sum(calls) == n_plain
    if tiles:
        assert n_plain > len(targets) + 1
    assert uncached_model.features.holds == ()  # nothing is held once the run is over
    assert sum(len(p.object_table) for p in plain) > 0
    changed = 0
    for p, q, image in zip(plain, refined, targets, strict=True):
        assert np.array_equal(p.labels, q.labels)
        _check_refined(q.objects, p)
        assert len(q.object_table) == len(np.unique(q.objects[q.objects > 0]))
        # as refine_objects gives after the run (the cached model: same weights)
        again, table = ns.refine_objects(model, image, p)
        assert np.array_equal(again, q.objects)
        assert table["area"].tolist() == q.object_table["area"].tolist()
        changed += int((q.objects != p.objects).sum())
    assert changed > 0  # the decoder redrew some borders


def test_refined_tiles_of_one_tile_are_the_untiled_refinement(model, images, disk_mask):
    refs = [ns.Reference(images[0], [ns.Mask(disk_mask, 1)])]
    opts = {"min_size": MIN_SIZE, "refine": True}
    (untiled,) = model.segment(refs, [images[4]], instances=opts)
    (one_tile,) = model.segment(refs, [images[4]], instances=opts, tile_size=128, halo=0)
    assert np.array_equal(untiled.labels, one_tile.labels)
    assert np.array_equal(untiled.objects, one_tile.objects)


def test_refine_objects_on_a_tiled_prediction(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask, label=1)])
    (tiled,) = model.segment(
        [ref], [images[1]], tile_size=80, halo=8, instances={"min_size": MIN_SIZE}
    )
    refined, table = ns.refine_objects(model, images[1], tiled)
    _check_refined(refined, tiled)
    assert len(table) == len(np.unique(refined[refined > 0]))
    with pytest.raises(ns.InvalidInputError, match="the image the prediction was made from"):
        ns.refine_objects(model, images[2][:50], tiled)


def test_a_run_stopped_early_holds_nothing(uncached_model, images, disk_mask):
    refs = [ns.Reference(images[0], [ns.Mask(disk_mask, 1)])]
    run = uncached_model.segment_iter(refs, images[1:5], instances={"refine": True})
    next(run)
    assert len(uncached_model.features.holds) == 1
    run.close()
    assert uncached_model.features.holds == ()


def test_refine_option_is_checked():
    assert ns.ObjectOptions.make({"refine": True}).refine is True
    assert ns.ObjectOptions().refine is False
    with pytest.raises(ns.InvalidInputError, match="refine must be True or False"):
        ns.ObjectOptions(refine="yes")
    with pytest.raises(ns.InvalidInputError, match="refine, dims and spacing"):
        ns.ObjectOptions.make({"refined": True})
    # split_objects takes the splitting's options, not refine
    opts = ns.ObjectOptions(min_size=3, refine=True)
    assert opts.split_options() == {"min_size": 3, "seed_distance": 5, "split": "distance"}


def test_a_tiled_run_holds_only_the_tiles_with_foreground():
    import torch

    from napari_sansa.core.engine import Features
    from napari_sansa.core.refine import FeatureHold
    from napari_sansa.core.tiling import tile_grid

    grid = tile_grid((128, 128), 64, 0)
    hold = FeatureHold()
    feats = Features((torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 1, 1))
    keys = [f"k{i}" for i in range(4)]
    for k in keys:
        hold.put(k, feats)
    low = np.full((4, 4), -3.0, np.float32)
    hot = low.copy()
    hot[1, 2] = 0.1  # just above the threshold's logit (0 at 0.5)
    results = [{1: (low, 0.5), 2: (hot, 0.5)}, {1: (low, 0.5)}, {1: (hot, 0.5)}, {}]
    hold.keep_tiles("target 0", grid, keys, results, 0.5)
    assert hold.tile_keys == {("target 0", 0): "k0", ("target 0", 2): "k2"}
    assert "k0" in hold and "k2" in hold and "k1" not in hold and "k3" not in hold
    # at a higher threshold, no tile has foreground
    hold.keep_tiles("target 1", grid[:1], keys[:1], results[:1], 0.6)
    assert ("target 1", 0) not in hold.tile_keys
    hold.release(["k0"], "target 0")  # k2 was not used, but it is target 0's: it goes too
    assert len(hold) == 0 and hold.tile_keys == {}
