"""The SANSA model: references in, labelled targets out.

``SansaModel.segment`` runs the whole job and returns one :class:`Prediction` per
target; ``SansaModel.segment_iter`` is the same as a generator that yields each
target as soon as it is finished (for progress bars and cancelling: stop iterating
and nothing more is computed).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from napari_sansa.core._threads import prefetch
from napari_sansa.core.cache import DiskFeatureCache, FeatureCache, array_digest, tensor_digest
from napari_sansa.core.engine import Engine, Features, FrameOutput, MemoryEntry
from napari_sansa.core.errors import DeviceMemoryError, InvalidInputError
from napari_sansa.core.fusion import check_threshold, fuse_labels, sigmoid
from napari_sansa.core.images import _check_range, image_hw, to_float_rgb
from napari_sansa.core.objects import ObjectOptions, with_objects
from napari_sansa.core.preprocess import (
    check_input_size,
    image_to_input,
    mask_to_input,
    sparse_prompts_to_input,
)
from napari_sansa.core.prompts import Mask, Reference
from napari_sansa.core.tiled_run import prepare_tiled_references, run_tiled_targets
from napari_sansa.core.tiling import TileSpec

__all__ = ["MODES", "Prediction", "Predictions", "ReferenceMemory", "SansaModel"]

MODES = ("independent", "sequential")


@dataclass(frozen=True, eq=False)
class Prediction:
    """The result for one image.

    ``logits[c]`` and ``probabilities[c]`` are ``(H, W)`` float32 maps of class ``c`` at
    the image's own size; ``labels`` is the fused ``(H, W)`` class map (0 =
    background); ``scores[c]`` is SAM2's predicted IoU for the kept mask of class
    ``c`` (1.0 for a reference given as a mask), a confidence in [0, 1].
    ``objects`` is the ``(H, W)`` map of object ids (0 = background) that
    :func:`napari_sansa.split_objects` makes of ``labels`` (with ``object_options``,
    default ones when None) and ``object_table`` measures them, one row per object.
    """

    index: int
    logits: dict
    scores: dict
    threshold: float = 0.5
    is_reference: bool = False
    object_options: object = None  # napari_sansa.ObjectOptions (None: the defaults)

    @cached_property
    def probabilities(self) -> dict[int, np.ndarray]:
        return {c: sigmoid(v) for c, v in self.logits.items()}

    @cached_property
    def labels(self) -> np.ndarray:
        return fuse_labels(self.probabilities, self.threshold)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(self.logits))

    @property
    def shape(self) -> tuple[int, int]:
        return getattr(self.logits, "shape", None) or next(iter(self.logits.values())).shape

    @cached_property
    def objects(self) -> np.ndarray:
        from napari_sansa.core.objects import objects_of

        return objects_of(self)

    @cached_property
    def object_table(self):
        from napari_sansa.core.objects import object_table

        return object_table(self.objects, self.labels, self.probabilities)

    def with_threshold(self, threshold: float) -> Prediction:
        """The same prediction fused at another threshold (nothing is recomputed)."""
        return Prediction(
            self.index,
            self.logits,
            self.scores,
            check_threshold(threshold),
            self.is_reference,
            self.object_options,
        )

    def __repr__(self) -> str:
        kind = "reference" if self.is_reference else "target"
        scores = ", ".join(f"{c}: {s:.3f}" for c, s in sorted(self.scores.items()))
        return f"Prediction({kind} {self.index}, shape={self.shape}, scores={{{scores}}})"


class Predictions(list):
    """A list of target :class:`Prediction` s; ``.references`` holds what was decoded
    from each reference's prompts."""

    def __init__(self, items=(), references=()):
        super().__init__(items)
        self.references: list[Prediction] = list(references)


@dataclass
class _Group:
    """Classes with the same number of references, processed together as a batch."""

    classes: list[int]
    k: int
    entries: dict[int, MemoryEntry] = field(default_factory=dict)
    digests: list[str] | None = None  # per class: what a target's decoding depends on

    def class_digests(self) -> list[str]:
        """Per class, a hash of its reference memory (all ``k`` entries): two runs whose
        class has the same digest decode every target identically."""
        if self.digests is None:
            parts = [[f"k={self.k}"] for _ in self.classes]
            for idx in range(self.k):
                e = self.entries[idx]
                feats, pos, ptr = (x.detach().cpu() for x in (e.features, e.pos, e.obj_ptr))
                for j, part in enumerate(parts):
                    part += [tensor_digest(feats[j]), tensor_digest(pos[j]), tensor_digest(ptr[j])]
            self.digests = ["/".join(part) for part in parts]
        return self.digests


class ReferenceMemory:
    """References decoded into per-class memory: prepare once, segment many times.

    Made by :meth:`SansaModel.prepare_references`; pass it to ``segment`` or
    ``segment_iter`` in place of the references, in this process or another one
    (it pickles, with its tensors moved to the CPU), e.g. to share it across the
    workers of a cluster. ``decoded`` holds what was decoded from each reference.
    """

    def __init__(self, groups, decoded, *, identity, input_size, intensity_range, n_references):
        self.groups = groups
        self.decoded = decoded
        self.identity = identity
        self.input_size = input_size
        self.intensity_range = intensity_range
        self.n_references = n_references

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(c for g in self.groups for c in g.classes))

    def to(self, device) -> ReferenceMemory:
        moved = []
        for g in self.groups:
            entries = {
                i: MemoryEntry(e.features.to(device), e.pos.to(device), e.obj_ptr.to(device))
                for i, e in g.entries.items()
            }
            moved.append(_Group(list(g.classes), g.k, entries, g.digests))
        return ReferenceMemory(
            moved,
            self.decoded,
            identity=self.identity,
            input_size=self.input_size,
            intensity_range=self.intensity_range,
            n_references=self.n_references,
        )

    def __getstate__(self):
        state = self.to("cpu").__dict__.copy()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"ReferenceMemory({self.n_references} references, classes={list(self.classes)}, "
            f"input_size={self.input_size})"
        )


_UNSET = object()


@dataclass(frozen=True)
class _Settings:
    mode: str
    input_size: int | None
    threshold: float
    intensity_range: tuple | None
    batch_size: int | None  # None: chosen from free device memory


class SansaModel:
    """SAM2 with (optional) SANSA adapters, ready to segment.

    Made by :func:`napari_sansa.load_model`. ``cache_bytes`` bounds the in-memory
    image-feature cache (0 turns it off); ``cache_dir`` adds a cache on disk
    (bounded by ``cache_dir_bytes``). ``result_cache_bytes`` bounds the cache of
    decoded targets (independent mode, per target and class, keyed by the target's
    features and the class's reference memory): a re-run where only some classes'
    prompts changed decodes only those classes. It needs the feature cache's image
    signatures and is off, like everything held in memory, when ``cache_bytes`` is 0.
    """

    def __init__(
        self,
        sam,
        *,
        config: str,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        identity: str | None = None,
        name: str | None = None,
        cache_bytes: int = 1 << 30,
        cache_dir=None,
        cache_dir_bytes: int = 10 << 30,
        result_cache_bytes: int = 256 << 20,
    ):
        self.sam = sam.to(device).eval()
        self.engine = Engine(self.sam)
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.name = name or config
        self._identity = identity or f"unsaved-{uuid.uuid4().hex}"
        disk = DiskFeatureCache(cache_dir, cache_dir_bytes) if cache_dir is not None else None
        self.feature_cache = FeatureCache(cache_bytes, disk)
        self.result_cache = FeatureCache(result_cache_bytes if cache_bytes > 0 else 0)

    # -- description --------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the model's square input (1024 for the released weights)."""
        return self.engine.image_size

    @property
    def adapters(self) -> dict[int, int]:
        """``{Hiera block: bottleneck width}`` of the SANSA adapters (empty: plain SAM2)."""
        from napari_sansa.core.models.adapters import adapter_blocks

        return adapter_blocks(self.sam)

    @property
    def adapter_stages(self) -> tuple[int, ...]:
        from napari_sansa.core.models.adapters import block_stages

        stages = block_stages(self.sam.image_encoder.trunk)
        return tuple(sorted({stages[i] for i in self.adapters}))

    @property
    def identity(self) -> str:
        """What the features depend on: weights, config, image size, precision, version."""
        from napari_sansa import __version__

        return f"{self._identity}|{self.config}|{self.image_size}|{self.dtype}|{__version__}"

    def __repr__(self) -> str:
        kind = f"adapters in stages {list(self.adapter_stages)}" if self.adapters else "no adapters"
        return (
            f"SansaModel({self.name!r}, config={self.config}, image_size={self.image_size}, "
            f"{kind}, device={self.device}, dtype={self.dtype})"
        )

    # -- public API ---------------------------------------------------------------------
    def prepare_references(
        self,
        references,
        *,
        input_size: int | None = 640,
        intensity_range=None,
        threshold: float = 0.5,
        tile_size: int | None = None,
        halo: int | None = None,
    ) -> ReferenceMemory:
        """Encode the references and decode their prompts into per-class memory, once.

        The result can be given to :meth:`segment` / :meth:`segment_iter` in place of the
        references any number of times (same model, same ``input_size`` and
        ``intensity_range``). ``threshold`` only fuses the decoded references' labels.
        ``tile_size``/``halo``: references larger than a tile are tiled (see ``segment``);
        give the targets the same ``tile_size``.
        """
        refs = self._check_references(references)
        s = self._check_settings("independent", input_size, threshold, intensity_range, None)
        tiles = TileSpec.make(tile_size, halo)
        if tiles is not None:
            return prepare_tiled_references(self, refs, s, tiles)
        return self._prepare_references(refs, s)

    def segment(
        self,
        references,
        targets,
        *,
        mode: str = "independent",
        input_size=_UNSET,
        threshold: float = 0.5,
        intensity_range=_UNSET,
        batch_size: int | None = None,
        tile_size: int | None = None,
        halo: int | None = None,
        instances=False,
    ) -> Predictions:
        """Label every target. Returns a list of :class:`Prediction` (one per target,
        in order) whose ``.references`` attribute holds the decoded references.

        ``references``: a list of :class:`Reference` (or one), or a
        :class:`ReferenceMemory` from :meth:`prepare_references`.
        ``mode="independent"``: each target sees only the references (the authors'
        benchmark protocol; for unrelated images). ``mode="sequential"``: targets in
        order, each also sees the previous ones (time-lapses, z-stacks).
        ``input_size``: the authors' intermediate square resize (default 640); ``None``
        resizes straight to the model's input. ``intensity_range``: ``(low, high)``
        mapped to [0, 1] for every image (default: each image's dtype rule).
        ``tile_size``: cut references and targets larger than ``tile_size`` pixels into
        overlapping tiles seen at the model's scale, each pixel taken from the tile where
        it is farthest from an edge (independent mode; default: off); ``halo``: pixels of
        context kept around each tile's own part (default ``tile_size // 8``).
        ``instances``: True (or a dict / :class:`ObjectOptions` of ``min_size``,
        ``seed_distance``, ``split``) splits each result into objects at once
        (``Prediction.objects``, ``Prediction.object_table``).
        """
        items = list(
            self.segment_iter(
                references,
                targets,
                mode=mode,
                input_size=input_size,
                threshold=threshold,
                intensity_range=intensity_range,
                batch_size=batch_size,
                tile_size=tile_size,
                halo=halo,
                instances=instances,
                include_references=True,
            )
        )
        refs = [p for p in items if p.is_reference]
        return Predictions([p for p in items if not p.is_reference], refs)

    def segment_iter(
        self,
        references,
        targets,
        *,
        mode: str = "independent",
        input_size=_UNSET,
        threshold: float = 0.5,
        intensity_range=_UNSET,
        batch_size: int | None = None,
        tile_size: int | None = None,
        halo: int | None = None,
        instances=False,
        include_references: bool = False,
    ) -> Iterator[Prediction]:
        """Generator form of :meth:`segment`: yields each target's :class:`Prediction`
        as soon as it is done, in order (after the references' when
        ``include_references``). Arguments are checked before it is returned;
        stopping the iteration stops the work."""
        if isinstance(references, ReferenceMemory):
            memory = references
            if memory.identity != self.identity:
                raise InvalidInputError(
                    "this ReferenceMemory was prepared by another model (or other weights or "
                    "precision); prepare the references again with this model"
                )
            given = {}
            if input_size is not _UNSET:
                given["input_size"] = check_input_size(input_size)
            if intensity_range is not _UNSET:
                given["intensity_range"] = (
                    None if intensity_range is None else _check_range(intensity_range)
                )
            for name, value in given.items():
                if value != getattr(memory, name):
                    raise InvalidInputError(
                        f"the references were prepared with {name}={getattr(memory, name)!r}, not "
                        f"{value!r}: targets must be pre-processed like their references"
                    )
            settings = self._check_settings(
                mode, memory.input_size, threshold, memory.intensity_range, batch_size
            )
        else:
            refs = self._check_references(references)
            settings = self._check_settings(
                mode,
                640 if input_size is _UNSET else input_size,
                threshold,
                None if intensity_range is _UNSET else intensity_range,
                batch_size,
            )
            memory = None
        _check_targets(targets)
        tiles = TileSpec.make(tile_size, halo)
        if tiles is not None and settings.mode != "independent":
            raise InvalidInputError(
                "tile_size works with mode='independent' only: each tile is a target of its own"
            )
        objects = ObjectOptions.make(instances)
        run = self._run(
            memory if memory is not None else refs, targets, settings, include_references, tiles
        )
        return run if objects is None else with_objects(run, objects)

    def adapter_parameters(self):
        """``(name, parameter)`` pairs of the adapter tensors, named as in the authors'
        checkpoint (``dict(model.adapter_parameters())``)."""
        from napari_sansa.core.training.model_copy import adapter_parameters

        return iter(adapter_parameters(self.sam))

    def save_adapters(self, path, *, overwrite: bool = False):
        """Write the adapters in the authors' checkpoint format, atomically."""
        from napari_sansa.core.training.model_copy import save_adapters

        return save_adapters(self, path, overwrite=overwrite)

    def decode_references(self, references, *, input_size=640, threshold=0.5, intensity_range=None):
        """What SAM2 makes of each reference's prompts, as :class:`Prediction` s."""
        return self.prepare_references(
            references, input_size=input_size, intensity_range=intensity_range, threshold=threshold
        ).decoded

    # -- checks -------------------------------------------------------------------------
    @staticmethod
    def _check_references(references) -> list[Reference]:
        if isinstance(references, Reference):
            references = [references]
        if references is None or isinstance(references, (str, bytes)):
            references = []
        try:
            refs = list(references)
        except TypeError:
            raise InvalidInputError(
                "references must be a list of napari_sansa.Reference objects"
            ) from None
        if not refs:
            raise InvalidInputError(
                "no references: give at least one napari_sansa.Reference (an image with a mask, "
                "points, a box or a scribble on the objects to find)"
            )
        for i, r in enumerate(refs):
            if not isinstance(r, Reference):
                raise InvalidInputError(
                    f"reference {i} is a {type(r).__name__}, not a napari_sansa.Reference; "
                    "wrap it as Reference(image, [Mask(...), Points(...), ...])"
                )
        return refs

    def _check_settings(
        self, mode, input_size, threshold, intensity_range, batch_size
    ) -> _Settings:
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if intensity_range is not None:
            intensity_range = _check_range(intensity_range)
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise InvalidInputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        return _Settings(
            mode,
            check_input_size(input_size),
            check_threshold(threshold),
            intensity_range,
            None if batch_size is None else int(batch_size),
        )

    # -- running ------------------------------------------------------------------------
    def _compute(self):
        """Context for every model call: no autograd, and autocast when not fp32."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.dtype != torch.float32:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
        return stack

    def _load_image(self, image, what: str, s: _Settings):
        """Read one image: its cache key, (H, W) and the [0, 1] RGB float array.

        The pixels are hashed for the key only when a feature cache is on; otherwise
        the key is unique and the image is simply encoded.
        """
        hw = image_hw(image, what)
        raw = np.asarray(image)
        rgb = to_float_rgb(raw, s.intensity_range, what)
        if self.feature_cache.enabled:
            parts = (array_digest(raw), str(s.intensity_range), str(s.input_size), self.identity)
            key = "|".join(parts)
        else:
            key = f"uncached-{uuid.uuid4().hex}"
        return key, hw, rgb

    def _features(self, loaded, s: _Settings) -> Features:
        """Features of several loaded images as one batch; each image is encoded at most once."""
        found: dict[str, Features] = {}
        todo = []
        for key, _hw, rgb in loaded:
            if key in found:
                continue
            cached = self.feature_cache.get(key)
            if cached is not None:
                found[key] = cached.to(self.device, non_blocking=True)
            else:
                todo.append((key, rgb))
                found[key] = None
        if todo:
            batch = torch.stack(
                [image_to_input(rgb, self.image_size, s.input_size, self.device) for _, rgb in todo]
            )
            feats = self.engine.encode(batch)
            for i, (key, _) in enumerate(todo):
                one = feats[i]
                found[key] = one
                if self.feature_cache.enabled:
                    self.feature_cache.put(key, one.to("cpu"), one.nbytes)
        return Features.cat([found[key] for key, _, _ in loaded])

    def _run(self, refs, targets, s: _Settings, include_references: bool, tiles=None):
        if isinstance(refs, ReferenceMemory):
            memory = refs.to(self.device)
            decoded = [p.with_threshold(s.threshold) for p in memory.decoded]
        elif tiles is not None:
            memory = prepare_tiled_references(self, refs, s, tiles)
            decoded = memory.decoded
        else:
            memory = self._prepare_references(refs, s)
            decoded = memory.decoded
        if include_references:
            yield from decoded
        if tiles is not None:
            yield from run_tiled_targets(self, targets, memory.groups, s, tiles)
        elif s.mode == "independent":
            yield from self._run_independent(targets, memory.groups, s)
        else:
            yield from self._run_sequential(targets, memory.groups, s)

    def _prepare_references(self, refs, s: _Settings) -> ReferenceMemory:
        size = self.image_size
        classes = sorted({c for r in refs for c in r.classes})
        per_class = {c: [i for i, r in enumerate(refs) if c in r.classes] for c in classes}
        entries: dict[tuple[int, int], MemoryEntry] = {}
        predictions = []
        for i, ref in enumerate(refs):
            loaded = self._load_image(ref.image, f"reference image {i}", s)
            outputs: dict[int, FrameOutput] = {}
            with self._compute():
                feats = self._features([loaded], s)
                for c in ref.classes:
                    prompts = ref.prompts_for(c)
                    if isinstance(prompts[0], Mask):
                        mask = np.logical_or.reduce([p.mask for p in prompts])
                        m = mask_to_input(mask, size, s.input_size, self.device)
                        if not bool(m.any()):
                            raise InvalidInputError(
                                f"reference {i}: the mask of class {c} disappears when resized to "
                                f"the model's input ({s.input_size or size} px square); paint a "
                                "larger area or use input_size=None"
                            )
                        out = self.engine.decode_mask_prompt(feats, m)
                    else:
                        coords, labels = sparse_prompts_to_input(prompts, loaded[1], size)
                        out = self.engine.decode_sparse_prompt(
                            feats,
                            torch.from_numpy(coords)[None].to(self.device),
                            torch.from_numpy(labels)[None].to(self.device),
                        )
                    outputs[c] = out
                    entries[(i, c)] = self.engine.memory(feats, out)
                pred_classes = sorted(outputs)
                predictions.append(
                    self._prediction(
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
            g = _Group(cls, k)
            for idx in range(k):
                g.entries[idx] = MemoryEntry.cat([entries[(per_class[c][idx], c)] for c in cls])
            groups.append(g)
        return ReferenceMemory(
            groups,
            predictions,
            identity=self.identity,
            input_size=s.input_size,
            intensity_range=s.intensity_range,
            n_references=len(refs),
        )

    def _prediction(self, index, hw, low, scores, classes, threshold, is_reference=False):
        """``low``: ``[C, S/4, S/4]`` logits -> Prediction at the image's own size."""
        up = F.interpolate(low[None].float(), size=hw, mode="bilinear", align_corners=False)[0]
        up = up.cpu().numpy()
        scores = scores.float().cpu().numpy()
        return Prediction(
            index,
            {c: up[j] for j, c in enumerate(classes)},
            {c: float(scores[j]) for j, c in enumerate(classes)},
            threshold,
            is_reference,
        )

    def _decode_group(self, g: _Group, feats: Features, t: int):
        """Decode one target (``feats``) for every class of ``g`` at episode index ``t``."""
        mem, pos, n_ptr = self.engine.gather(g.entries, t)
        f = feats.repeat_interleave(len(g.classes))
        return f, self.engine.decode_with_memory(f, (mem, pos, n_ptr))

    def _prefetched(self, targets, s: _Settings, depth: int):
        """Targets read and converted ahead, on background threads: (index, loaded)."""
        workers = 1 if self.device.type == "cpu" else 4
        return prefetch(
            enumerate(targets),
            lambda item: (item[0], self._load_image(item[1], f"target {item[0]}", s)),
            depth=depth,
            workers=workers,
        )

    def _run_independent(self, targets, groups, s: _Settings):
        sizer = _BatchSizer(s.batch_size, self.device)
        source = self._prefetched(targets, s, depth=max(2, sizer.size))
        pending: list = []
        error = None
        try:
            while True:
                try:
                    item = next(source)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - a target that cannot be read:
                    error = exc  # the targets before it are finished first
                    break
                pending.append(item)
                if len(pending) >= sizer.size:
                    yield from self._independent_batch(pending, groups, s, sizer)
                    pending = []
            if pending:
                yield from self._independent_batch(pending, groups, s, sizer)
        finally:
            source.close()
        if error is not None:
            raise error

    def _independent_batch(self, items, groups, s: _Settings, sizer):
        """Decode a batch of targets; on out-of-memory, retry it in smaller batches.

        Target-class pairs found in the result cache are not decoded again, and a
        target whose classes are all found there is not even encoded.
        """
        n = len(items)
        loaded = [x[1] for x in items]
        try:
            with self._compute():
                sizer.start()
                found, todo = self._cached_results(loaded, groups)
                need = sorted({j for pairs in todo for j, _ in pairs})
                if need:
                    feats = self._features([loaded[j] for j in need], s)
                    row = {j: r for r, j in enumerate(need)}
                    for g, pairs in zip(groups, todo, strict=True):
                        if not pairs:
                            continue
                        out = self._decode_pairs(
                            g, feats, [row[j] for j, _ in pairs], [ci for _, ci in pairs]
                        )
                        for p, (j, ci) in enumerate(pairs):
                            result = (out.low_res[p], out.score[p])
                            found[(j, g.classes[ci])] = result
                            self._remember(loaded[j][0], g, ci, result)
                classes = sorted(c for g in groups for c in g.classes)
                preds = []
                for j, (i, _) in enumerate(items):
                    low = torch.cat([found[(j, c)][0].to(self.device) for c in classes])
                    score = torch.stack([found[(j, c)][1].to(self.device) for c in classes])
                    preds.append(
                        self._prediction(i, loaded[j][1], low, score, classes, s.threshold)
                    )
                if need:
                    sizer.measured(len(need))
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            del exc
            self._release_memory()
            if n == 1:
                self._out_of_memory(items[0])
            sizer.shrink(n)
            half = n // 2
            yield from self._independent_batch(items[:half], groups, s, sizer)
            yield from self._independent_batch(items[half:], groups, s, sizer)
            return
        yield from preds

    def _decode_pairs(self, g: _Group, feats: Features, rows: list[int], cls: list[int]):
        """Decode target ``rows[p]`` of ``feats`` for class ``g.classes[cls[p]]``, all pairs
        ``p`` as one batch (independent mode: episode index ``g.k``)."""
        mem, pos, n_ptr = self.engine.gather(g.entries, g.k)  # [L, classes, C]
        idx = torch.as_tensor(cls, device=mem.device)
        mem, pos = mem.index_select(1, idx), pos.index_select(1, idx)
        return self.engine.decode_with_memory(feats.take(rows), (mem, pos, n_ptr))

    def _result_key(self, target_key: str, g: _Group, ci: int) -> str | None:
        if not self.result_cache.enabled or target_key.startswith("uncached-"):
            return None
        return f"{target_key}|class-memory:{g.class_digests()[ci]}"

    def _cached_results(self, loaded, groups):
        """``({(target, class): (logits [1, h, w], score)}, per group the (target, class
        index) pairs still to decode)``."""
        found, todo = {}, []
        for g in groups:
            pairs = []
            for j, (key, _hw, _rgb) in enumerate(loaded):
                for ci, c in enumerate(g.classes):
                    rkey = self._result_key(key, g, ci)
                    hit = self.result_cache.get(rkey) if rkey is not None else None
                    if hit is None:
                        pairs.append((j, ci))
                    else:
                        found[(j, c)] = hit
            todo.append(pairs)
        return found, todo

    def _remember(self, target_key: str, g: _Group, ci: int, result) -> None:
        rkey = self._result_key(target_key, g, ci)
        if rkey is not None:
            low, score = (x.detach().float().to("cpu", copy=True) for x in result)
            self.result_cache.put(rkey, (low, score), low.numel() * 4 + 4)

    def _release_memory(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _out_of_memory(self, item):
        index, (_key, (h, w), _rgb) = item
        need = ""
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            need = (
                f" (it used about {peak / 2**30:.1f} GiB before failing; {free / 2**30:.1f} of "
                f"{total / 2**30:.1f} GiB free)"
            )
        raise DeviceMemoryError(
            f"target {index} ({h}x{w} pixels) does not fit in the {self.device} memory even on "
            f"its own{need}: close other programs on the device, use precision='bf16', a smaller "
            "SAM2, or device='cpu'"
        ) from None

    def _run_sequential(self, targets, groups, s: _Settings):
        groups = [_Group(g.classes, g.k, dict(g.entries)) for g in groups]  # this run's own episode
        keep = max(self.sam.num_maskmem - 1, self.sam.max_obj_ptrs_in_encoder - 1)
        source = self._prefetched(targets, s, depth=2)
        try:
            for j, loaded in source:
                try:
                    with self._compute():
                        feats = self._features([loaded], s)
                        found = {}
                        for g in groups:
                            t = g.k + j
                            f, out = self._decode_group(g, feats, t)
                            g.entries[t] = self.engine.memory(f, out)
                            for old in [x for x in g.entries if 0 < x <= t - keep]:
                                del g.entries[old]
                            for ci, c in enumerate(g.classes):
                                found[c] = (out.low_res[ci], out.score[ci])
                        classes = sorted(found)
                        pred = self._prediction(
                            j,
                            loaded[1],
                            torch.cat([found[c][0] for c in classes]),
                            torch.stack([found[c][1] for c in classes]),
                            classes,
                            s.threshold,
                        )
                except Exception as exc:
                    if not _is_out_of_memory(exc):
                        raise
                    del exc
                    self._release_memory()
                    self._out_of_memory((j, loaded))
                yield pred
        finally:
            source.close()


class _BatchSizer:
    """The batch size of a run: as given, or measured on the device (CUDA: from free memory)."""

    MAX = 64

    def __init__(self, fixed: int | None, device: torch.device):
        self.device = device
        self.auto = fixed is None
        self.size = fixed if fixed is not None else 1
        self._probing = self.auto and device.type == "cuda"

    def start(self):
        if self._probing:
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)

    def measured(self, n: int):
        """After a first batch on CUDA: as many targets as fit in 80 % of the free memory."""
        if not self._probing:
            return
        self._probing = False
        per_target = max((torch.cuda.max_memory_allocated(self.device) - self._base) / n, 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        self.size = int(min(self.MAX, max(1, 0.8 * free / per_target)))

    def shrink(self, failed_at: int):
        self.size = max(1, min(self.size, failed_at) // 2)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _check_targets(targets) -> None:
    if targets is None or isinstance(targets, (str, bytes)):
        raise InvalidInputError("targets must be a list (or a stack) of images")
    ndim = getattr(targets, "ndim", None)
    shape = getattr(targets, "shape", None)
    if ndim == 2 or (ndim == 3 and shape[-1] in (2, 3, 4)):
        raise InvalidInputError(
            f"targets has shape {tuple(shape)}, which looks like a single image: pass a list "
            "of images, e.g. targets=[image]"
        )
    if not isinstance(targets, Iterable):
        raise InvalidInputError("targets must be a list (or a stack) of images")
