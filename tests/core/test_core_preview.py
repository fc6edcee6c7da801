"""core.preview: one frame's features ahead of time, and SAM2's redraw from clicks."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sansa as ns
from conftest import load_test_model, make_image
from napari_sansa.core.preview import cache_features, features_cached, redraw_mask


def test_cached_features_are_the_ones_a_run_uses(model, monkeypatch):
    image = make_image(71)
    assert not features_cached(model, image)
    assert cache_features(model, image) is True
    assert features_cached(model, image)
    assert not features_cached(model, image, input_size=None)  # other pre-processing
    assert cache_features(model, image) is False
    calls = []
    real = model.engine.encode
    monkeypatch.setattr(model.engine, "encode", lambda x: calls.append(len(x)) or real(x))
    model.decode_references([ns.Reference(image, [ns.Points([[30, 40]])])])
    assert calls == []


def test_a_click_redraw_is_sam2s_decoding_of_that_click(model):
    image = make_image(72)
    mask, logits = redraw_mask(model, image, points=[[30, 40]])
    assert mask.shape == image.shape[:2] and logits.shape == (64, 64)
    ref = model.decode_references([ns.Reference(image, [ns.Points([[30, 40]])])])[0]
    np.testing.assert_array_equal(mask, ref.labels == 1)
    # the logits of a redraw chain into the next one; a mask prompt changes the result
    again, _ = redraw_mask(model, image, points=[[30, 40], [5, 5]], positive=[1, 0], logits=logits)
    assert again.shape == mask.shape
    removed, _ = redraw_mask(model, image, points=[[5, 5]], positive=[False], mask=mask)
    assert removed.shape == mask.shape


def test_bad_redraws_say_what_to_change(model, weights):
    image = make_image(73)
    with pytest.raises(ns.InvalidInputError, match="outside the 96x128 image"):
        redraw_mask(model, image, points=[[10, 500]])
    with pytest.raises(ns.InvalidInputError, match="only negative clicks"):
        redraw_mask(model, image, points=[[10, 10]], positive=[False])
    with pytest.raises(ns.InvalidInputError, match="at least one click or a box"):
        redraw_mask(model, image)
    with pytest.raises(ns.InvalidInputError, match="the mask is 3x3"):
        redraw_mask(model, image, points=[[10, 10]], mask=np.ones((3, 3), bool))
    uncached = load_test_model(weights, cache_bytes=0)
    with pytest.raises(ns.InvalidInputError, match="feature cache is off"):
        cache_features(uncached, image)
    assert not features_cached(uncached, image)


def test_the_preview_of_a_reference_is_the_runs_decoding_of_it(recomputing_model, disk_mask):
    from napari_sansa.core.preview import preview_reference

    model = recomputing_model
    image = make_image(74)
    ref = ns.Reference(
        image,
        [
            ns.Points([[30, 40], [35, 60], [10, 10]], label=1, positive=[1, 1, 0]),
            ns.Box((60, 10, 85, 50), label=2),
            ns.Mask(disk_mask, label=3),
        ],
    )
    for threshold in (0.5, 0.3):
        run = model.prepare_references([ref], threshold=threshold).decoded[0]
        got = preview_reference(model, ref, threshold=threshold)
        np.testing.assert_array_equal(got.labels, run.labels)
        assert got.scores == run.scores and got.classes == run.classes
        for c in run.classes:
            np.testing.assert_array_equal(got.probabilities[c], run.probabilities[c])
    big = np.tile(make_image(75, (500, 500), rgb=False), (4, 4))
    tiny = np.zeros(big.shape, bool)
    tiny[5, 5] = True  # lost at the model's input: the run's message
    with pytest.raises(ns.InvalidInputError, match="disappears when resized"):
        model.prepare_references([ns.Reference(big, [ns.Mask(tiny)])])
    with pytest.raises(ns.InvalidInputError, match="disappears when resized"):
        preview_reference(model, ns.Reference(big, [ns.Mask(tiny)]))
