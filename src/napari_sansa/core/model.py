"""The SANSA model: references in, labelled targets out.

``SansaModel.segment`` runs the whole job and returns one :class:`Prediction` per
target; ``SansaModel.segment_iter`` is the same as a generator that yields each
target as soon as it is finished (for progress bars and cancelling: stop iterating
and nothing more is computed, or set the ``cancel=`` event from another thread).

The work itself lives in :mod:`~napari_sansa.core.references` (references ->
memory) and :mod:`~napari_sansa.core.runners` (targets through the memory); the
results in :mod:`~napari_sansa.core.results`.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from dataclasses import replace

import torch

from napari_sansa.core.cache import DiskFeatureCache, FeatureCache
from napari_sansa.core.engine import Engine
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.features import ImageFeatures
from napari_sansa.core.models import weights
from napari_sansa.core.models.settings import ModelSettings
from napari_sansa.core.objects import with_objects
from napari_sansa.core.options import (
    MODES,
    RunOptions,
    SegmentOptions,
    check_references,
    check_targets,
)
from napari_sansa.core.references import prepare_memory
from napari_sansa.core.refine import RunRefiner
from napari_sansa.core.results import Prediction, Predictions, ReferenceMemory
from napari_sansa.core.runners import run_independent, run_sequential
from napari_sansa.core.threads import with_thread_policy
from napari_sansa.core.tiled_run import prepare_tiled_references, run_tiled_targets

__all__ = ["MODES", "Prediction", "Predictions", "ReferenceMemory", "SansaModel", "SegmentOptions"]


class SansaModel:
    """SAM2 with (optional) SANSA adapters, ready to segment.

    Made by :func:`napari_sansa.load_model`. ``settings``: the
    :class:`~napari_sansa.core.models.settings.ModelSettings` it was loaded with (its
    cache options are used here; ``options`` replace some of them, e.g.
    ``cache_bytes=0``). ``cache_bytes`` bounds the in-memory image-feature cache (0
    turns it off, and every other in-memory cache with it); ``cache_dir`` adds one on
    disk (bounded by ``cache_dir_bytes``). ``result_cache_bytes`` bounds the cache of
    decoded targets (independent mode, per target and class, keyed by the target's
    features and the class's reference memory): a re-run where only some classes'
    prompts changed decodes only those classes. ``source_identity``: the
    :meth:`ModelSettings.identity <napari_sansa.core.models.settings.ModelSettings.identity>`
    of the files and settings the weights were loaded from (set by the loader; None for
    weights made or changed in memory, e.g. fine-tuned ones).
    """

    #: for a model made by fine-tuning: the run's FinetuneReport (which adapters it holds,
    #: with their held-out IoU before and after); None otherwise
    finetune_report = None

    def __init__(
        self,
        sam,
        *,
        config: str,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        identity: str | None = None,
        name: str | None = None,
        settings: ModelSettings | None = None,
        source_identity: dict | None = None,
        **options,
    ):
        self.settings = ModelSettings.from_options(settings, **options)
        s = self.settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.engine = Engine(sam.to(device).eval())
        self.config = config
        self.name = name or config
        self._identity = identity or f"unsaved-{uuid.uuid4().hex}"
        self._source_identity = dict(source_identity) if source_identity is not None else None
        disk = DiskFeatureCache(s.cache_dir, s.cache_dir_bytes) if s.cache_dir is not None else None
        #: the images' features: loading, keys, the feature cache, encoding (core.features)
        self.features = ImageFeatures(
            self.engine,
            device=self.device,
            dtype=dtype,
            cache=FeatureCache(s.cache_bytes, disk),
            identity=lambda: self.identity,
        )
        self.result_cache = FeatureCache(s.result_cache_bytes if s.cache_bytes > 0 else 0)

    @property
    def feature_cache(self) -> FeatureCache:
        """The image-feature cache (``features.cache``; ``FeatureCache(0)``: off)."""
        return self.features.cache

    @feature_cache.setter
    def feature_cache(self, cache: FeatureCache) -> None:
        self.features.cache = cache

    def with_feature_cache(self, cache: FeatureCache) -> SansaModel:
        """A view of this model (the same network, weights, settings and result cache)
        whose images' features go to ``cache``; this model is not changed, so other
        threads running it are not affected (a folder run's ``follow`` keeps a stack's
        features on disk so)."""
        import copy

        view = copy.copy(self)
        view.features = ImageFeatures(
            self.engine,
            device=self.device,
            dtype=self.dtype,
            cache=cache,
            identity=lambda: self.identity,
        )
        return view

    # -- description --------------------------------------------------------------------
    @property
    def sam(self):
        """The SAM2 network (held by :attr:`engine`; read-only here, for inspection)."""
        return self.engine.sam

    @property
    def image_size(self) -> int:
        """Side of the model's square input (1024 for the released weights)."""
        return self.engine.image_size

    @property
    def adapters(self) -> dict[int, int]:
        """``{Hiera block: bottleneck width}`` of the SANSA adapters (empty: plain SAM2)."""
        return self.engine.adapter_blocks()

    @property
    def adapter_stages(self) -> tuple[int, ...]:
        return self.engine.adapter_stages()

    @property
    def identity(self) -> str:
        """What the features depend on: weights, config, image size, precision, version."""
        from napari_sansa import __version__

        return f"{self._identity}|{self.config}|{self.image_size}|{self.dtype}|{__version__}"

    @property
    def source_identity(self) -> dict | None:
        """The identity of the weights files and settings this model was loaded from, as
        :meth:`ModelSettings.identity <napari_sansa.core.models.settings.ModelSettings.identity>`
        gives it (a copy), or None when its weights were not loaded from files as they
        are (fine-tuned, fresh, built in memory). A dataset run records it: the same
        weights resume a run whether they come as this model or as its settings. Weights
        changed in place through :attr:`sam` are not noticed: fine-tune a copy
        (:func:`~napari_sansa.finetune` does) or build a new model."""
        return dict(self._source_identity) if self._source_identity is not None else None

    def __repr__(self) -> str:
        kind = f"adapters in stages {list(self.adapter_stages)}" if self.adapters else "no adapters"
        return (
            f"SansaModel({self.name!r}, config={self.config}, image_size={self.image_size}, "
            f"{kind}, device={self.device}, dtype={self.dtype})"
        )

    # -- public API ---------------------------------------------------------------------
    @with_thread_policy
    def prepare_references(
        self, references, options=None, *, memory_frames: str = "last", **keywords
    ) -> ReferenceMemory:
        """Encode the references and decode their prompts into per-class memory, once.

        The result can be given to :meth:`segment` / :meth:`segment_iter` in place of the
        references any number of times (same model, same ``input_size`` and
        ``intensity_range``). ``options``: a :class:`SegmentOptions` (or its fields as
        keywords): ``input_size`` and ``intensity_range`` pre-process the references,
        ``threshold`` only fuses the decoded references' labels, and references larger
        than ``tile_size`` are tiled (see ``segment_iter``; give the targets the same
        tiles); the other fields are not used here.
        ``memory_frames``: which references of a class with more than 7 enter SAM2's
        7-frame memory: ``"last"`` (the authors' rule: the first and the last six) or
        ``"spread"`` (7 spread evenly over the list, first and last included); the
        others reach the targets through their object pointers only.
        """
        refs = check_references(references)
        options = SegmentOptions.make(options, **keywords)
        s = RunOptions.of(
            replace(options, mode="independent", batch_size=None, tile_size=None, halo=None)
        )
        if options.tiles is not None:
            return prepare_tiled_references(self, refs, s, options.tiles)
        return prepare_memory(self, refs, s, memory_frames=memory_frames)

    def segment(self, references, targets, options=None, **keywords) -> Predictions:
        """Label every target. Returns a list of :class:`Prediction` (one per target,
        in order) whose ``.references`` attribute holds the decoded references.

        Takes the arguments of :meth:`segment_iter` (all but ``include_references``).
        """
        run = self.segment_iter(references, targets, options, **keywords, include_references=True)
        items = list(run)
        refs = [p for p in items if p.is_reference]
        return Predictions([p for p in items if not p.is_reference], refs)

    def segment_iter(
        self,
        references,
        targets,
        options: SegmentOptions | None = None,
        *,
        cancel=None,
        include_references: bool = False,
        **keywords,
    ) -> Iterator[Prediction]:
        """Label every target, yielding each target's :class:`Prediction` as soon as it
        is done, in order (after the references' when ``include_references``).
        Arguments are checked before the generator is returned; stopping the iteration
        stops the work.

        ``references``: a list of :class:`Reference` (or one), or a
        :class:`ReferenceMemory` from :meth:`prepare_references`.
        ``options``: a :class:`SegmentOptions`; ``keywords``: its fields (``mode``,
        ``input_size``, ``threshold``, ``intensity_range``, ``batch_size``,
        ``tile_size``, ``halo``, ``instances``), replacing those of ``options``, e.g.
        ``segment_iter(refs, targets, mode="sequential")`` (see :class:`SegmentOptions`
        for what each does and its default). With a :class:`ReferenceMemory`,
        ``input_size`` and ``intensity_range`` are the memory's; given (as keywords, or
        by ``options``), they must be the same.
        ``cancel``: a ``threading.Event`` (or a callable returning True) set from another
        thread to stop the run: it is polled between references, between images and
        between classes, so the run ends within about one image's work at any batch
        size (the batch is capped at a few images then, see ``CANCEL_BATCH``), and the
        generator simply ends. Without it, a consumer stops by not asking for more.
        Tiles (independent mode) cut references and targets larger than ``tile_size``
        pixels into overlapping tiles seen at the model's scale, each pixel taken from
        the tile where it is farthest from an edge. ``instances`` splits each result into
        objects at once (``Prediction.objects``, ``Prediction.object_table``); its
        ``refine=True`` redraws each target's objects by SAM2 box prompts on the features
        of the run (tiles included), with no second encoding (see
        :mod:`napari_sansa.core.refine`).
        """
        given = set(keywords) | (set(SegmentOptions.names()) if options is not None else set())
        options = SegmentOptions.make(options, **keywords)
        if isinstance(references, ReferenceMemory):
            memory = references
            if memory.identity != self.identity:
                raise InvalidInputError(
                    "this ReferenceMemory was prepared by another model (or other weights or "
                    "precision); prepare the references again with this model"
                )
            for name in ("input_size", "intensity_range"):
                value, prepared = getattr(options, name), getattr(memory, name)
                if name in given and value != prepared:
                    raise InvalidInputError(
                        f"the references were prepared with {name}={prepared!r}, not "
                        f"{value!r}: targets must be pre-processed like their references"
                    )
            options = replace(
                options, input_size=memory.input_size, intensity_range=memory.intensity_range
            )
        else:
            refs = check_references(references)
            memory = None
        settings = RunOptions.of(options, cancel)
        check_targets(targets)
        tiles = options.tiles
        objects = options.instances
        refiner = None
        if objects is not None and objects.refine:
            refiner = RunRefiner(self, settings)
            targets = refiner.watch(targets)
        run = self._run(
            memory if memory is not None else refs, targets, settings, include_references, tiles
        )
        return run if objects is None else with_objects(run, objects, refiner)

    def adapter_parameters(self):
        """``(name, parameter)`` pairs of the adapter tensors, named as in the authors'
        checkpoint (``dict(model.adapter_parameters())``)."""
        return iter(self.engine.adapter_parameters())

    def save_adapters(self, path, *, overwrite: bool = False):
        """Write the adapters in the authors' checkpoint format, atomically."""
        return weights.save_adapters(self.engine, path, overwrite=overwrite)

    def decode_references(self, references, options=None, **keywords):
        """What SAM2 makes of each reference's prompts, as :class:`Prediction` s
        (``options`` as :meth:`prepare_references` takes them)."""
        return self.prepare_references(references, options, **keywords).decoded

    # -- running ------------------------------------------------------------------------
    @with_thread_policy  # torch's and NumPy's threads sized for the run, put back after
    def _run(self, refs, targets, s: RunOptions, include_references: bool, tiles=None):
        if isinstance(refs, ReferenceMemory):
            memory = refs.to(self.device)
            decoded = [p.with_threshold(s.threshold) for p in memory.decoded]
        else:
            if tiles is None:
                memory = prepare_memory(self, refs, s)
            else:
                memory = prepare_tiled_references(self, refs, s, tiles)
            if memory is None:  # cancelled
                return
            decoded = memory.decoded
        if include_references:
            yield from decoded
        if tiles is not None:
            yield from run_tiled_targets(self, targets, memory.groups, s, tiles)
        elif s.mode == "independent":
            yield from run_independent(self, targets, memory.groups, s)
        else:
            yield from run_sequential(self, targets, memory.groups, s)


def _signature_of_segment():
    """``segment`` takes ``segment_iter``'s arguments: one signature, written once."""
    sig = inspect.signature(SansaModel.segment_iter)
    params = [p for name, p in sig.parameters.items() if name != "include_references"]
    return sig.replace(parameters=params, return_annotation="Predictions")


SansaModel.segment.__signature__ = _signature_of_segment()
