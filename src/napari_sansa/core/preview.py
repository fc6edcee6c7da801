"""One frame at a time, for the annotation loop: its features ahead of time, and a mask
redrawn by clicks on them.

* :func:`cache_features` encodes one image into the model's feature cache (nothing
  when it is there already), keyed as a run keys it, so a later run (or preview, or
  redraw) of that image with the same pre-processing takes the features from the cache.
  :func:`features_cached` says whether it is there.
* :func:`redraw_mask` is SAM2's interactive decoding on one image's (cached) features:
  points (positive and negative) and/or a box, optionally with a mask prompt (the
  current mask, or the logits of the previous redraw), single-mask output. It returns
  the mask at the image's size and the low-resolution logits, to give back as the mask
  prompt of the next redraw.

* :func:`preview_reference` is what a run decodes from one reference: the same
  Prediction as ``model.prepare_references([reference]).decoded[0]`` (each reference
  and class is decoded on its own in a run, so the other references do not change it),
  by the same steps, without the memory entries a run also makes from it (SAM2's
  memory encoder: more than half of the time of a reference, and not needed to see
  its masks).
"""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.options import RunOptions, SegmentOptions

__all__ = ["cache_features", "features_cached", "preview_reference", "redraw_mask"]

MASK_LOGIT = 10.0  # a mask given as a prompt becomes +-10 logits (as the engine does)


def _options(options, keywords) -> RunOptions:
    """The run's options (a :class:`SegmentOptions` and/or its fields as keywords: the
    pre-processing, ``input_size`` and ``intensity_range``, and the ``threshold``)."""
    return RunOptions.of(SegmentOptions.make(options, **keywords))


def features_cached(model, image, options=None, **keywords) -> bool:
    """Whether the model's feature cache holds ``image``'s features for this
    pre-processing (False when the cache is off)."""
    if not model.feature_cache.enabled:
        return False
    key = model.features.load(image, "image", _options(options, keywords)).key
    return key in model.feature_cache


def cache_features(model, image, options=None, **keywords) -> bool:
    """Encode ``image`` into the model's feature cache; True when it was encoded now,
    False when it was there already. With the cache off (``cache_bytes=0``) nothing can
    be kept: raises InvalidInputError."""
    if not model.feature_cache.enabled:
        raise InvalidInputError(
            "the model's feature cache is off (cache_bytes=0): features cannot be kept for "
            "later; load the model with a feature cache"
        )
    s = _options(options, keywords)
    loaded = model.features.load(image, "image", s)
    if loaded.key in model.feature_cache:
        return False
    with model.features.compute():
        model.features.encode([loaded], s)
    return True


def preview_reference(model, reference, options=None, **keywords):
    """The Prediction a run decodes from ``reference`` (its masks, scores and labels
    equal to ``model.prepare_references([reference], ...).decoded[0]``'s), without the
    memory entries; the features come from the feature cache when it holds them."""
    import torch

    from napari_sansa.core.engine import FrameOutput
    from napari_sansa.core.options import check_references
    from napari_sansa.core.preprocess import mask_to_input
    from napari_sansa.core.references import decode_prompt, prompt_input
    from napari_sansa.core.results import make_prediction

    (ref,) = check_references([reference])
    s = _options(options, keywords)
    loaded = model.features.load(ref.image, "reference image 0", s)
    no_pointer = FrameOutput(None, None, None)  # a mask's pointer goes to memory only
    low, scores = {}, {}
    with model.features.compute():
        feats = model.features.encode([loaded], s)
        for c in ref.classes:
            prompt = prompt_input(model, ref, c, loaded.hw)
            if prompt[0] == "mask":
                m = mask_to_input(prompt[1], model.image_size, s.input_size, model.device)
                if not bool(m.any()):  # the run's own check and message
                    decode_prompt(model, feats, prompt, 0, c, s)
                out = model.engine.decode_mask_prompt(feats, m, decoded=no_pointer)
            else:
                out = decode_prompt(model, feats, prompt, 0, c, s)
            low[c], scores[c] = out.low_res, out.score
        classes = sorted(low)
        return make_prediction(
            0,
            loaded.hw,
            torch.cat([low[c] for c in classes], dim=1)[0],
            torch.cat([scores[c] for c in classes]),
            classes,
            s.threshold,
            is_reference=True,
        )


def redraw_mask(
    model,
    image,
    options=None,
    *,
    points=None,
    positive=None,
    box=None,
    mask=None,
    logits=None,
    **keywords,
):
    """``(mask, logits)``: SAM2's mask for clicks and/or a box on ``image``.

    ``points``: ``(N, 2)`` (row, col) pixel coordinates; ``positive``: N booleans
    (default all True). ``box``: ``(row0, col0, row1, col1)``. ``mask``: the current
    mask (``(H, W)`` bool) given to SAM2 as its mask prompt (as +-10 logits on the
    model's grid, downsampled as a mask reference is); ``logits``: the low-resolution
    logits of an earlier redraw, given as the mask prompt instead (SAM2's own way to
    chain clicks; wins over ``mask``). The image is encoded once per pre-processing
    (the model's feature cache). ``mask`` out: ``(H, W)`` bool; ``logits`` out:
    ``(S/4, S/4)`` float32.
    """
    import torch
    import torch.nn.functional as F

    from napari_sansa.core.images import image_hw
    from napari_sansa.core.preprocess import mask_to_input
    from napari_sansa.core.prompts import Box
    from napari_sansa.core.sam_points import NEGATIVE, POSITIVE, to_sam_xy

    s = _options(options, keywords)
    hw = tuple(image_hw(image, "image"))
    h, w = hw
    xy, kinds = [np.zeros((0, 2), np.float32)], [np.zeros(0, np.int32)]
    if points is not None and len(points):
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        pos = np.ones(len(pts), bool) if positive is None else np.asarray(positive, bool)
        if pos.shape != (len(pts),):
            raise InvalidInputError(f"{len(pts)} clicks but {pos.size} positive flags")
        bad = ~np.isfinite(pts).all(axis=1)
        bad |= (pts[:, 0] < -0.5) | (pts[:, 0] > h) | (pts[:, 1] < -0.5) | (pts[:, 1] > w)
        if bad.any():
            r, c = pts[np.argmax(bad)]
            raise InvalidInputError(
                f"a click at (row={r:g}, col={c:g}) lies outside the {h}x{w} image: click on it"
            )
        if not pos.any() and box is None and mask is None and logits is None:
            raise InvalidInputError(
                "only negative clicks and nothing to remove them from: add a positive click "
                "on the object (or a box)"
            )
        xy.append(to_sam_xy(pts, hw, model.image_size))
        kinds.append(np.where(pos, POSITIVE, NEGATIVE))
    if box is not None:
        b = Box(tuple(box), label=1)
        b.check_within(hw)
        bxy, bkinds = b.sam_points(hw, model.image_size)
        xy.append(bxy)
        kinds.append(bkinds)
    coords = np.concatenate(xy).astype(np.float32)
    labels = np.concatenate(kinds).astype(np.int32)
    if not len(coords):
        raise InvalidInputError("give at least one click or a box to redraw the mask")
    loaded = model.features.load(image, "image", s)
    size = model.image_size
    with model.features.compute():
        feats = model.features.encode([loaded], s)
        dense = None
        if logits is not None:
            low = torch.as_tensor(np.asarray(logits, np.float32), device=model.device)
            dense = low.reshape(1, 1, *low.shape[-2:])
        elif mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != hw:
                raise InvalidInputError(
                    f"the mask is {mask.shape[0]}x{mask.shape[1]} but the image {hw[0]}x{hw[1]}"
                )
            if mask.any():
                m = mask_to_input(mask, size, s.input_size, model.device).float()
                high = m * (2 * MASK_LOGIT) - MASK_LOGIT
                dense = F.interpolate(
                    high, size=(size // 4, size // 4), mode="bilinear",
                    align_corners=False, antialias=True,
                )  # fmt: skip
        out = model.engine.decode_sparse_prompt(
            feats,
            torch.from_numpy(coords)[None].to(model.device),
            torch.from_numpy(labels)[None].to(model.device),
            mask_prompt=dense,
        )
        low = out.low_res.float()
        up = F.interpolate(low, size=hw, mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy() > 0, low[0, 0].cpu().numpy()
