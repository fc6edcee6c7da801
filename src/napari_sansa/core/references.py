"""References -> per-class memory: encode each reference image, decode its prompts.

Every class is decoded on its own (its mask is taken as it is, its clicks, boxes
and scribbles go through SAM2's decoder), then its frames are grouped with the
other classes that have as many references, so that targets are decoded for
those classes as one batch.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from napari_sansa.core.cache import array_digest
from napari_sansa.core.engine import FrameOutput, MemoryEntry
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.features import LoadedImage
from napari_sansa.core.preprocess import mask_to_input, sparse_prompts_to_input
from napari_sansa.core.results import ClassGroup, ReferenceMemory, make_prediction

__all__ = ["MEMORY_FRAMES", "episode_order", "prepare_memory"]


MEMORY_FRAMES = ("last", "spread")


def prepare_memory(model, refs, s, memory_frames: str = "last") -> ReferenceMemory | None:
    """The references' memory; None when ``s.cancelled()`` turned True meanwhile.

    ``memory_frames`` chooses which references of a class enter SAM2's memory bank
    when it has more than it holds (see :func:`episode_order`).

    Each (reference, class) is decoded on its own, so its memory entry depends only on
    the reference image and that class's prompts: it is kept in the model's result
    cache under that key, and a re-run where some classes' prompts changed decodes
    only those (a reference whose classes are all found is not even looked up in the
    feature cache).
    """
    if memory_frames not in MEMORY_FRAMES:
        raise InvalidInputError(
            f"memory_frames must be one of {', '.join(MEMORY_FRAMES)}, got {memory_frames!r}"
        )
    classes = sorted({c for r in refs for c in r.classes})
    per_class = {c: [i for i, r in enumerate(refs) if c in r.classes] for c in classes}
    if memory_frames == "spread":
        per_class = {c: episode_order(model, idx) for c, idx in per_class.items()}
    entries: dict[tuple[int, int], MemoryEntry] = {}
    keys: dict[tuple[int, int], str | None] = {}
    predictions = []
    for i, ref in enumerate(refs):
        if s.cancelled():
            return None
        loaded = model.features.load(ref.image, f"reference image {i}", s)
        outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # class: (low_res, score)
        feats = None
        with model.features.compute():
            for c in ref.classes:
                prompt = prompt_input(model, ref, c, loaded.hw)
                keys[(i, c)] = key = _entry_key(model, loaded, prompt)
                hit = model.result_cache.get(key) if key is not None else None
                if hit is not None:
                    entry, low, score = _to_device(hit, model.device)
                else:
                    if feats is None:
                        feats = model.features.encode([loaded], s)
                    out = decode_prompt(model, feats, prompt, i, c, s)
                    entry, low, score = model.engine.memory(feats, out), out.low_res, out.score
                    if key is not None:
                        _remember(model, key, (entry, low, score))
                outputs[c] = (low, score)
                entries[(i, c)] = entry
            pred_classes = sorted(outputs)
            predictions.append(
                make_prediction(
                    i,
                    loaded.hw,
                    torch.cat([outputs[c][0] for c in pred_classes], dim=1)[0],
                    torch.cat([outputs[c][1] for c in pred_classes]),
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
        g.digests = _class_digests(k, [[keys[(i, c)] for i in per_class[c]] for c in cls])
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


def episode_order(model, references: list[int]) -> list[int]:
    """``references`` (one class's, in the order given) reordered so that SAM2's memory,
    which holds episode frame 0 and the frames just before the target, holds references
    spread evenly over the list (the first and the last included); the others come in
    between, in their order, and reach the targets through their object pointers."""
    k = len(references)
    slots, _ = model.engine.frames_for(k, range(k))
    n = len(slots)  # frames in memory: 7 with SAM2's memory bank
    if k <= n:
        return list(references)
    chosen = sorted({round(x) for x in np.linspace(0, k - 1, n)})
    rest = [i for i in range(k) if i not in chosen]
    return [references[i] for i in (chosen[0], *rest, *chosen[1:])]


def prompt_input(model, ref, c, hw):
    """What the decoder gets for class ``c`` of ``ref``: ``("mask", union mask)`` or
    ``("sparse", coords, labels)`` on the model's grid (numpy)."""
    prompts = ref.prompts_for(c)
    if not prompts[0].sparse:
        return ("mask", np.logical_or.reduce([p.mask for p in prompts]))
    return ("sparse", *sparse_prompts_to_input(prompts, hw, model.image_size))


def decode_prompt(model, feats, prompt, i, c, s) -> FrameOutput:
    size = model.image_size
    if prompt[0] == "mask":
        m = mask_to_input(prompt[1], size, s.input_size, model.device)
        if not bool(m.any()):
            raise InvalidInputError(
                f"reference {i}: the mask of class {c} disappears when resized to "
                f"the model's input ({s.input_size or size} px square); paint a "
                "larger area or use input_size=None"
            )
        return model.engine.decode_mask_prompt(feats, m)
    _, coords, labels = prompt
    return model.engine.decode_sparse_prompt(
        feats,
        torch.from_numpy(coords)[None].to(model.device),
        torch.from_numpy(labels)[None].to(model.device),
    )


def _entry_key(model, image: LoadedImage, prompt) -> str | None:
    """The result-cache key of one (reference, class) memory entry: the reference
    image's feature key (its pixels, pre-processing and the model) and the prompt."""
    if not model.result_cache.enabled or not image.keyed:
        return None
    return "|".join(["reference-entry", image.key, prompt[0], *map(array_digest, prompt[1:])])


def _class_digests(k: int, keys: list[list[str | None]]) -> list[str] | None:
    """Per class, a digest of its k entries' keys (what its targets' decoding depends
    on); None when some entry has no key (the digests are then taken from the tensors)."""
    if any(key is None for class_keys in keys for key in class_keys):
        return None
    return [
        hashlib.blake2b("\n".join([f"k={k}", *class_keys]).encode(), digest_size=20).hexdigest()
        for class_keys in keys
    ]


def _remember(model, key: str, item) -> None:
    entry, low, score = item
    parts = (entry.features, entry.pos, entry.obj_ptr, low, score)
    cpu = tuple(x.detach().to("cpu", copy=True) for x in parts)
    model.result_cache.put(key, cpu, sum(x.numel() * x.element_size() for x in cpu))


def _to_device(hit, device):
    feats, pos, ptr, low, score = (x.to(device) for x in hit)
    return MemoryEntry(feats, pos, ptr), low, score


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
