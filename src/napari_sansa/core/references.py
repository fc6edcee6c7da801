"""References -> per-class memory: encode each reference image, decode its prompts.

Every class is decoded on its own (its mask is taken as it is, its clicks, boxes
and scribbles go through SAM2's decoder), then its frames are grouped with the
other classes that have as many references, so that targets are decoded for
those classes as one batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from napari_sansa.core.engine import FrameOutput, MemoryEntry
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.preprocess import mask_to_input, sparse_prompts_to_input
from napari_sansa.core.prompts import Mask
from napari_sansa.core.results import ClassGroup, ReferenceMemory, make_prediction

__all__ = ["prepare_memory"]


def prepare_memory(model, refs, s) -> ReferenceMemory | None:
    """The references' memory; None when ``s.cancelled()`` turned True meanwhile."""
    size = model.image_size
    classes = sorted({c for r in refs for c in r.classes})
    per_class = {c: [i for i, r in enumerate(refs) if c in r.classes] for c in classes}
    entries: dict[tuple[int, int], MemoryEntry] = {}
    predictions = []
    for i, ref in enumerate(refs):
        if s.cancelled():
            return None
        loaded = model._load_image(ref.image, f"reference image {i}", s)
        outputs: dict[int, FrameOutput] = {}
        with model._compute():
            feats = model._features([loaded], s)
            for c in ref.classes:
                prompts = ref.prompts_for(c)
                if isinstance(prompts[0], Mask):
                    mask = np.logical_or.reduce([p.mask for p in prompts])
                    m = mask_to_input(mask, size, s.input_size, model.device)
                    if not bool(m.any()):
                        raise InvalidInputError(
                            f"reference {i}: the mask of class {c} disappears when resized to "
                            f"the model's input ({s.input_size or size} px square); paint a "
                            "larger area or use input_size=None"
                        )
                    out = model.engine.decode_mask_prompt(feats, m)
                else:
                    coords, labels = sparse_prompts_to_input(prompts, loaded[1], size)
                    out = model.engine.decode_sparse_prompt(
                        feats,
                        torch.from_numpy(coords)[None].to(model.device),
                        torch.from_numpy(labels)[None].to(model.device),
                    )
                outputs[c] = out
                entries[(i, c)] = model.engine.memory(feats, out)
            pred_classes = sorted(outputs)
            predictions.append(
                make_prediction(
                    i,
                    loaded[1],
                    torch.cat([outputs[c].low_res for c in pred_classes], dim=1)[0],
                    torch.cat([outputs[c].score for c in pred_classes]),
                    pred_classes,
                    s.threshold,
                    is_reference=True,
                )
            )
    by_k: dict[int, list[int]] = {}
    for c in classes:
        by_k.setdefault(len(per_class[c]), []).append(c)
    groups = []
    for k, cls in sorted(by_k.items()):
        slots, pointers = model.engine.frames_for(k, range(k))
        reach = (tuple(sorted(j for _, j in slots)), tuple(sorted(pointers)))
        g = ClassGroup(cls, k, references=[tuple(per_class[c]) for c in cls], reach=reach)
        for idx in range(k):
            g.entries[idx] = MemoryEntry.cat([entries[(per_class[c][idx], c)] for c in cls])
        groups.append(g)
    memory = ReferenceMemory(
        groups,
        predictions,
        identity=model.identity,
        input_size=s.input_size,
        intensity_range=s.intensity_range,
        n_references=len(refs),
    )
    _warn_about_unseen_references(memory)
    return memory


def _warn_about_unseen_references(memory: ReferenceMemory) -> None:
    """Say so when some references of a class reach the targets only by their object
    pointers (more than 7 references of a class) or not at all (more than 16)."""
    parts = [
        f"class {c}: references {list(refs)} only through their object pointers"
        for c, refs in memory.pointer_only.items()
    ]
    parts += [f"class {c}: references {list(refs)} not at all" for c, refs in memory.unused.items()]
    if parts:
        warnings.warn(
            "SAM2's memory holds a class's first reference and its last six (the authors' rule), "
            "so some references reach the targets less: "
            + "; ".join(parts)
            + ". Put the most telling references first and last, or use at most 7 per class "
            "(ReferenceMemory.pointer_only lists them)",
            UserWarning,
            stacklevel=4,
        )
