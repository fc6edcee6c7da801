"""Image features of a model: images loaded and keyed, encoded once, cached and held.

A :class:`LoadedImage` is one image read for a run: its cache key, its ``(H, W)`` and its
``[0, 1]`` RGB float array. :class:`ImageFeatures` (``SansaModel.features``) is the one
place that turns loaded images into :class:`~napari_sansa.core.engine.Features`: the
runners, the references, the tiled runs and the refinement of objects load and encode
through it, and it keeps the model's feature cache and the holds of runs that refine
their objects (:class:`~napari_sansa.core.refine.FeatureHold`).

Keys. An image is keyed by its content (a hash of its pixels), how it is pre-processed
(the intensity rule, ``input_size``) and the model's identity, but only while a feature
cache is on or a hold is armed: otherwise the key is unique (``uncached-...``) and the
image is simply encoded, without hashing its pixels.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from napari_sansa.core.cache import FeatureCache, array_digest
from napari_sansa.core.engine import Engine, Features
from napari_sansa.core.images import image_hw, to_float_rgb
from napari_sansa.core.preprocess import image_to_input

__all__ = ["UNCACHED", "ImageFeatures", "LoadedImage"]

#: the prefix of the key of an image that is not looked up or kept anywhere
UNCACHED = "uncached-"


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """One image read for a run: its feature key, ``(H, W)`` and ``[0, 1]`` RGB floats.

    ``rgb`` is None for an image whose features are known to be held (a refinement on
    the tiles a run kept): it is never encoded.
    """

    key: str
    hw: tuple[int, int]
    rgb: np.ndarray | None

    @property
    def keyed(self) -> bool:
        """Whether ``key`` names the image's content (False: a unique key, nothing cached)."""
        return not self.key.startswith(UNCACHED)


class ImageFeatures:
    """Load, key, cache and encode the images of a model's runs.

    ``engine``: the model's :class:`Engine`; ``device``/``dtype``: where and at which
    precision it runs; ``cache``: the feature cache (``FeatureCache(0)``: off);
    ``identity``: the model's identity (what its features depend on), asked for each key.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        device: torch.device,
        dtype: torch.dtype,
        cache: FeatureCache,
        identity: Callable[[], str],
    ):
        self.engine = engine
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache = cache
        self._identity = identity
        self._holds: list = []  # core.refine.FeatureHold s of runs refining their objects

    # -- the compute context -----------------------------------------------------------
    def compute(self):
        """Context for every model call of a run: no autograd, and autocast when not fp32."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.dtype != torch.float32:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
        return stack

    # -- keys and loading ----------------------------------------------------------------
    @property
    def keyed(self) -> bool:
        """Whether images are keyed by content now (a feature cache is on, or a hold armed)."""
        return self.cache.enabled or bool(self._holds)

    def key(self, *parts: str) -> str:
        """The feature key of an image described by ``parts`` (its pixels' digest and how
        it is pre-processed) and the model's identity; a unique key when not :attr:`keyed`."""
        if not self.keyed:
            return f"{UNCACHED}{uuid.uuid4().hex}"
        return "|".join((*parts, self._identity()))

    def load(self, image, what: str, options) -> LoadedImage:
        """Read one image (``what`` names it in errors) as ``options`` (its
        ``intensity_range`` and ``input_size``) pre-process it."""
        hw = image_hw(image, what)
        raw = np.asarray(image)
        rgb = to_float_rgb(raw, options.intensity_range, what)
        if self.keyed:
            parts = (array_digest(raw), str(options.intensity_range), str(options.input_size))
            key = self.key(*parts)
        else:
            key = self.key()
        return LoadedImage(key, hw, rgb)

    def load_tile(self, src, tile, options) -> LoadedImage:
        """Read one tile of a :class:`~napari_sansa.core.tiling.TiledImage`; its key holds
        the tile's pixels and the image's intensity rule."""
        raw = src.raw(tile)
        if self.keyed:
            key = self.key(array_digest(raw), src.rule(), str(options.input_size))
        else:
            key = self.key()
        return LoadedImage(key, tile.shape, src.rgb(tile, raw))

    # -- encoding ----------------------------------------------------------------------
    def encode(self, loaded: list[LoadedImage], options) -> Features:
        """Features of several loaded images as one batch, in order; each image is encoded
        at most once (features held by a run or in the cache are taken from there)."""
        found: dict[str, Features] = {}
        todo = []
        for item in loaded:
            key = item.key
            if key in found:
                continue
            held = next((h.get(key) for h in self._holds if key in h), None)
            cached = held if held is not None else self.cache.get(key)
            if cached is not None:
                found[key] = cached.to(self.device, non_blocking=True)
            else:
                todo.append(item)
                found[key] = None
        if todo:
            size = self.engine.image_size
            batch = torch.stack(
                [image_to_input(x.rgb, size, options.input_size, self.device) for x in todo]
            )
            feats = self.engine.encode(batch)
            for i, item in enumerate(todo):
                one = feats[i]
                found[item.key] = one
                if self.cache.enabled:
                    self.cache.put(item.key, one.to("cpu"), one.nbytes)
        for hold in self._holds:  # a run refining its objects keeps them (core.refine)
            for item in loaded:
                hold.put(item.key, found[item.key])
        return Features.cat([found[item.key] for item in loaded])

    # -- holds of runs that refine their objects ----------------------------------------
    @property
    def holds(self) -> tuple:
        """The armed holds (:class:`~napari_sansa.core.refine.FeatureHold`), oldest first."""
        return tuple(self._holds)

    def arm(self, hold) -> None:
        """From now on every encoded or cached image's features are put in ``hold`` too
        (and images are keyed by content); arming an armed hold does nothing."""
        if hold not in self._holds:
            self._holds.append(hold)

    def disarm(self, hold) -> None:
        if hold in self._holds:
            self._holds.remove(hold)

    def keep_tiles(self, what: str, tiles, keys, results, threshold: float) -> None:
        """Tell every armed hold which of target ``what``'s ``tiles`` (their ``keys`` and
        decoded ``results``) have foreground (see ``FeatureHold.keep_tiles``)."""
        for hold in self._holds:
            hold.keep_tiles(what, tiles, keys, results, threshold)
