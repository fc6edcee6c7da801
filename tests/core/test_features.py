"""The image-features service (``SansaModel.features``): loaded images, keys, encoding once."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_test_model, make_image
from napari_sansa.core.cache import FeatureCache
from napari_sansa.core.features import ImageFeatures, LoadedImage
from napari_sansa.core.options import check_run_options
from napari_sansa.core.refine import FeatureHold


@pytest.fixture(scope="module")
def options():
    return check_run_options("independent", 64, 0.5, None, None)


@pytest.fixture(scope="module")
def service(weights):
    """The features of a model of its own (its cache is changed here)."""
    return load_test_model(weights, result_cache_bytes=0).features


def test_the_model_loads_and_encodes_through_its_service(weights):
    model = load_test_model(weights)
    assert isinstance(model.features, ImageFeatures)
    assert model.features.engine is model.engine
    assert model.feature_cache is model.features.cache


def test_an_image_is_keyed_by_content_only_while_a_cache_or_hold_is_on(service, options):
    image = make_image(3)
    service.cache = FeatureCache(1 << 30)
    a = service.load(image, "image", options)
    b = service.load(image.copy(), "image", options)
    assert isinstance(a, LoadedImage) and a.hw == (96, 128) and a.rgb.shape == (96, 128, 3)
    assert a.keyed and a.key == b.key
    service.cache = FeatureCache(0)
    c, d = (service.load(image, "image", options) for _ in range(2))
    assert not c.keyed and c.key != d.key  # nothing cached: each load is a new image
    hold = FeatureHold()
    service.arm(hold)
    try:
        assert service.holds == (hold,)
        e = service.load(image, "image", options)
        assert e.keyed and e.key == a.key  # a run refining its objects keys by content
    finally:
        service.disarm(hold)
    assert service.holds == ()


def test_encode_encodes_each_image_once_and_keeps_them_in_order(service, options, monkeypatch):
    service.cache = FeatureCache(1 << 30)
    one, two = make_image(4), make_image(5)
    calls = []
    real = service.engine.encode
    monkeypatch.setattr(service.engine, "encode", lambda x: calls.append(len(x)) or real(x))
    a, b = (service.load(x, f"image {i}", options) for i, x in enumerate((one, two)))
    feats = service.encode([a, b, a], options)
    assert calls == [2] and feats.batch == 3  # the repeated image encoded once
    assert np.array_equal(feats[0].top.numpy(), feats[2].top.numpy())
    again = service.encode([b], options)
    assert calls == [2]  # from the cache
    assert np.array_equal(again.top.numpy(), feats[1].top.numpy())
