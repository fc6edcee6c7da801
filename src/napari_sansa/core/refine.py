"""Objects refined by SAM2: one decoder pass per object, its box as the prompt.

:func:`refine_objects` takes a prediction's objects (:attr:`Prediction.objects`) and
asks SAM2's decoder, for each object, for the mask inside the object's bounding box,
on the image's features: with the model's feature cache on (the default), the
features computed while segmenting are reused and the image is not encoded again.

The refined masks redraw the borders between the objects of a class: a pixel of class
``c`` goes to the object of class ``c`` whose refined mask claims it with the highest
logit; pixels no refined mask claims keep their object. The class map is not changed
(no object grows outside its class, none is removed), and ids stay those of
:attr:`Prediction.objects`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError

__all__ = ["refine_objects"]


@dataclass(frozen=True)
class _Preprocessing:
    """What the model's image loading and encoding read of a run's settings."""

    input_size: int | None
    intensity_range: tuple | None


def refine_objects(
    model, image, prediction, *, input_size=640, intensity_range=None, batch: int = 32
):
    """``(objects, table)``: ``prediction``'s objects refined by SAM2 box prompts.

    ``image`` is the image ``prediction`` was made from; ``input_size`` and
    ``intensity_range`` must be those of that run (they select its cached features).
    Tiled predictions are not refined (:class:`InvalidInputError`).
    """
    import torch
    import torch.nn.functional as F

    from napari_sansa.core.images import _check_range
    from napari_sansa.core.objects import object_table
    from napari_sansa.core.preprocess import check_input_size, sparse_prompts_to_input
    from napari_sansa.core.prompts import Box
    from napari_sansa.core.tiling import StitchedLogits

    if isinstance(prediction.logits, StitchedLogits):
        raise InvalidInputError(
            "refine_objects works on untiled predictions only: a tiled prediction's objects "
            "would need each tile's features"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(f"batch must be a whole number >= 1, got {batch!r}")
    pre = _Preprocessing(
        check_input_size(input_size),
        None if intensity_range is None else _check_range(intensity_range),
    )
    loaded = model._load_image(image, "image", pre)
    hw = tuple(loaded[1])
    if hw != tuple(prediction.shape):
        raise InvalidInputError(
            f"the image is {hw[0]}x{hw[1]} but the prediction {prediction.shape[0]}x"
            f"{prediction.shape[1]}: give the image the prediction was made from"
        )
    objects, classes = prediction.objects, prediction.labels
    table = prediction.object_table
    refined = objects.copy()
    if not len(table):
        return refined, table
    best = np.full(hw, -np.inf, dtype=np.float32)
    rows = [
        (int(table["object"][i]), int(table["class"][i]), _box(table, i)) for i in range(len(table))
    ]
    with model._compute():
        feats = model._features([loaded], pre)
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            prompts = [sparse_prompts_to_input([Box(b)], hw, model.image_size) for _, _, b in part]
            coords = torch.from_numpy(np.stack([c for c, _ in prompts])).to(model.device)
            labels = torch.from_numpy(np.stack([lab for _, lab in prompts])).to(model.device)
            out = model.engine.decode_sparse_prompt(
                feats.repeat_interleave(len(part)), coords, labels
            )
            up = F.interpolate(out.low_res.float(), size=hw, mode="bilinear", align_corners=False)
            up = up[:, 0].cpu().numpy()
            for (oid, c, (r0, c0, r1, c1)), logits in zip(part, up, strict=True):
                win = logits[r0:r1, c0:c1]
                claim = (classes[r0:r1, c0:c1] == c) & (win > 0) & (win > best[r0:r1, c0:c1])
                refined[r0:r1, c0:c1][claim] = oid
                best[r0:r1, c0:c1][claim] = win[claim]
    return refined, object_table(refined, classes, prediction.probabilities)


def _box(table, i: int) -> tuple[int, int, int, int]:
    return tuple(int(table[f"bbox_{k}"][i]) for k in ("min_row", "min_col", "max_row", "max_col"))
