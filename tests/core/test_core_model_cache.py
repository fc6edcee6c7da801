"""Which loaded model is reused: by the weights' content and the resolved settings."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import CONFIG, SIZE


def _settings(sam2, **kw):
    from napari_sansa.core.models.settings import ModelSettings

    options = {"config": CONFIG, "device": "cpu", "image_size": SIZE, **kw}
    return ModelSettings(sam2_checkpoint=str(sam2), **options)


def test_replacing_the_weights_at_the_same_path_loads_the_new_weights(weights, tmp_path):
    from napari_sansa.core.models.cache import ModelCache
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    path = tmp_path / "sam2.pt"
    shutil.copyfile(weights[0], path)
    cache = ModelCache()
    settings = _settings(path)
    first = cache.get(settings)
    assert cache.get(settings) is first and cache.has(settings) and cache.loads == 1
    other, _ = write_random_checkpoints(tmp_path / "other", CONFIG, image_size=SIZE, seed=1)
    st = path.stat()
    shutil.copyfile(other, path)  # same path, same size, new content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not cache.has(settings)
    second = cache.get(settings)
    assert second is not first and cache.loads == 2
    assert second.identity != first.identity
    assert settings.identity()["sam2"] != _settings(weights[0]).identity()["sam2"]


def test_auto_precision_is_resolved_in_the_key(weights, monkeypatch):
    import torch

    from napari_sansa.core import cpu_bf16

    monkeypatch.setattr(cpu_bf16, "cpu_flags", lambda cpuinfo=None: frozenset({"avx2"}))
    cpu_auto, cpu_fp32 = _settings(weights[0]), _settings(weights[0], precision="fp32")
    assert cpu_auto.identity()["precision"] == "fp32"
    assert cpu_auto.cache_key() == cpu_fp32.cache_key()  # the same model on a CPU
    # on a (simulated) GPU, "auto" is bf16: another model, another run signature
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu_auto = _settings(weights[0], precision="auto", device="auto")
    gpu_fp32 = _settings(weights[0], precision="fp32", device="auto")
    assert gpu_auto.identity()["device"] == "cuda" and gpu_auto.identity()["precision"] == "bf16"
    assert gpu_auto.cache_key() != gpu_fp32.cache_key()
    assert gpu_auto.identity() != cpu_auto.identity()
    assert gpu_fp32.identity()["device"] == "cuda"


def test_the_model_cache_is_bounded(weights):
    from napari_sansa.core.models.cache import ModelCache
    from napari_sansa.dataset import models

    cache = ModelCache(max_models=2)
    a, b, c = (_settings(weights[0], cache_bytes=n << 20) for n in (1, 2, 3))
    model_a = cache.get(a)
    cache.get(b)
    assert cache.get(a) is model_a  # a is now the most recently used
    cache.get(c)  # b goes
    assert len(cache) == 2 and cache.has(a) and cache.has(c) and not cache.has(b)
    assert cache.loads == 3
    cache.get(b)
    assert cache.loads == 4 and not cache.has(a)
    # the dataset runner's (Dask workers') cache is one of these, bounded
    assert isinstance(models._MODELS, ModelCache) and models._MODELS.max_models <= 2
    with pytest.raises(ValueError):
        ModelCache(max_models=0)


def test_unknown_model_option_is_refused_with_the_known_ones(weights):
    import napari_sansa as ns

    with pytest.raises(TypeError, match="cache_bytes"):
        ns.load_model(sam2_checkpoint=weights[0], cache_byte=0)
