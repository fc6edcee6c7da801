"""The annotation loop on the shown frame: features ahead of time, an instant preview of
what SANSA takes from the prompts, and fixing a labelled frame with clicks.

:class:`FramePreviews` is the session's part for it (``session.previews``); it imports
no Qt and starts its work through the session's ``create_worker`` (one job at a time,
in order; without ``create_worker`` a job runs at once, in the calling thread).

* :meth:`~FramePreviews.prepare`: the frame's image features, computed in the
  background into the model's feature cache ("preparing frame ..." in the status), so
  that the preview, a click fix and the run find them there.
* :meth:`~FramePreviews.request`: the preview of the shown frame: for every class with
  prompts on it, the reference mask the run will use for that frame, in the Labels
  layer ``<image> [sansa preview]``. It is computed the run's way: the frame is read
  and scaled as the run reads it (in an image set, by the set's shared intensity
  range), its prompts are decoded by ``core.preview.preview_reference`` (the run's
  decoding steps: each reference and class on its own, so the other references do not
  change it; references larger than a tile by ``prepare_references`` with the run's
  tiles), and painted masks are laid over the decoding as the run lays them
  (``worker.reference_labels``). Only frames whose prompts, model or settings changed
  are decoded again.
* :meth:`~FramePreviews.fix`: on a frame a run labelled, positive/negative clicks
  (and/or a box) of a class redraw that class's mask with SAM2's decoder on the frame's
  features; the output layer changes through napari's undo history (one Ctrl+Z), and
  the frame then counts as edited by hand (:mod:`.edits`), so it can be taken as a
  reference. :meth:`~FramePreviews.clear_class` removes a class's prompts from the
  shown frame.

Nothing here changes a layer the person made, except :meth:`clear_class` (which is
asked for) and the fix of the output layer (undoable).
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
from psygnal import Signal

from napari_sansa.napari.geometry import (
    META_KEY,
    PromptError,
    at_level,
    image_geometry,
    labels_array,
)
from napari_sansa.napari.imageset import META_IMAGE, SetPlan, assign_prompt_layers
from napari_sansa.napari.plan import NO_IMAGE, RunPlan, plan_image

__all__ = [
    "FramePreviews",
    "PreviewJob",
    "fix_layer_name",
    "preview_name",
    "preview_plan",
    "run_job",
]

logger = logging.getLogger(__name__)

#: seconds the widget waits after the last prompt edit before asking for a preview
DEBOUNCE_S = 0.05


def preview_name(image_name: str) -> str:
    return f"{image_name} [sansa preview]"


def fix_layer_name(image_name: str) -> str:
    return f"{image_name} [sansa fix]"


# -- reading the image set without judging its prompts ----------------------------------


def preview_plan(images, prompt_layers, as_channels: bool = False) -> SetPlan:
    """The image set as a run reads it (each image's frames, prompts and intensity
    range, layers assigned to images as a run assigns them), without a run's refusals
    (a single image with prompts, every frame with prompts): raises PromptError for
    prompts that cannot be read."""
    from dataclasses import replace

    from napari_sansa.napari.geometry import FrameStack
    from napari_sansa.napari.imageset import ChannelLayers

    images = [image for image in images if image is not None]
    if not images:
        raise PromptError(NO_IMAGE)
    layers = list(prompt_layers)
    if as_channels and len(images) > 1:
        plan = plan_image(images[0], layers)
        geometry = replace(plan.geometry, rgb=True)
        stack = FrameStack(ChannelLayers(images), geometry, name=images[0].name)
        return SetPlan((RunPlan(stack, plan.references, plan.targets, None),))
    if len(images) == 1:
        return SetPlan((plan_image(images[0], layers),))
    assigned = assign_prompt_layers(images, layers)
    return SetPlan(tuple(plan_image(im, own) for im, own in zip(images, assigned, strict=True)))


# -- jobs: frozen values for the worker -------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreviewJob:
    """One piece of work: 'prepare' (features), 'preview' (reference masks) or 'fix'."""

    kind: str
    plan: SetPlan
    frames: tuple  # ((part, frame), ...)
    model_settings: object
    settings: object  # RunSettings
    generation: int = 0
    names: tuple = ()  # the image layers' names, per part
    fix: dict = field(default_factory=dict)  # kind 'fix': label, points, positive, box, mask


@dataclass(frozen=True, eq=False)
class JobResult:
    job: PreviewJob
    labels: dict  # (part, frame) -> class map (preview) / redrawn mask (fix)
    encoded: int = 0  # images encoded by this job
    error: str | None = None
    logits: np.ndarray | None = None  # fix: low-res logits for the next click


def run_job(job: PreviewJob, cache) -> JobResult:
    """The work of ``job`` (in the worker thread): plain values in, plain values out."""
    from napari_sansa.napari.worker import leave_a_core_for_napari

    try:
        with leave_a_core_for_napari():
            return _run_job(job, cache)
    except (ValueError, OSError, MemoryError) as exc:  # user errors: shown as they are
        from napari_sansa.napari.messages import gui_message

        return JobResult(job, {}, error=gui_message(exc, job.model_settings)[0])
    except Exception as exc:  # noqa: BLE001 - torch's RuntimeErrors, and bugs: logged, shown
        # a preview is background work: its failure is said in the preview's state (with
        # the traceback in the log), never raised into napari's event loop, where a run's
        # failure already goes
        logger.exception("SANSA preview failed")
        return JobResult(job, {}, error=f"failed: {type(exc).__name__}: {exc}")


def _reader(plan: SetPlan):
    from napari_sansa.napari.worker import SetFrames

    shared, intensity = plan.shared_intensity_range()
    return SetFrames(plan, (), scale=not shared), intensity


def _run_job(job: PreviewJob, cache) -> JobResult:
    import napari_sansa as ns
    from napari_sansa.core.preview import cache_features, preview_reference, redraw_mask
    from napari_sansa.napari.worker import reference_labels

    plan = job.plan
    reader, intensity = _reader(plan)
    s = replace(job.settings.segment, intensity_range=intensity)  # as the run reads the frames
    if job.kind == "prepare":
        model = cache.get(job.model_settings)
        encoded = 0
        for part, frame in job.frames:
            p = plan.parts[part]
            if s.tiled(p.geometry.hw) or not model.feature_cache.enabled:
                continue  # tiles: the preview encodes them (a run's tiles, not the frame)
            encoded += cache_features(model, reader.read(part, frame), s)
        return JobResult(job, {}, encoded=encoded)
    if job.kind == "fix":
        model = cache.get(job.model_settings)
        (part, frame), f = job.frames[0], job.fix
        mask, logits = redraw_mask(
            model,
            reader.read(part, frame),
            s,
            points=f.get("points"),
            positive=f.get("positive"),
            box=f.get("box"),
            mask=f.get("mask"),
            logits=f.get("logits"),
        )
        return JobResult(job, {(part, frame): mask}, logits=logits)
    out = {}
    dtype = _dtype(plan)
    for part, frame in job.frames:
        p = plan.parts[part]
        ref = next((r for r in p.references if r.frame == frame), None)
        if ref is None:
            out[(part, frame)] = np.zeros(p.geometry.hw, dtype)
            continue
        own = ref.masks()
        if len(own) == len(ref.classes):  # painted masks only: they are the reference
            labels = np.zeros(p.geometry.hw, dtype)
            for c, m in sorted(own.items()):
                labels[m] = c
            out[(part, frame)] = labels
            continue
        model = cache.get(job.model_settings)
        reference = ns.Reference(reader.read(part, frame), ref.prompts)
        if s.tiled(p.geometry.hw):  # decoded tile by tile, as the run does
            decoded = model.prepare_references([reference], s).decoded[0]
        else:
            decoded = preview_reference(model, reference, s)
        out[(part, frame)] = reference_labels(decoded, own, dtype)
    return JobResult(job, out)


def _dtype(plan: SetPlan):
    return plan.labels_dtype if plan.classes else np.dtype(np.uint8)


# -- the session's part -----------------------------------------------------------------


class FramePreviews:
    """Previews, prepared frames and click fixes of one :class:`~.session.SansaSession`."""

    #: the preview's state ("preparing frame 3 ...", "frame 3 ... is ready", "preview: ...",
    #: "preview waits: ..."): the widget shows it under its switch
    status = Signal(str)

    def __init__(self, session):
        self.session = session
        #: the switch: False stops previews (and hides the preview layers)
        self.enabled = True
        #: callables returning a reason (str) while other work must not share the model
        #: (the widget adds fine-tuning's); a run of the session always counts
        self.blockers: list = []
        self.worker = None
        self.current: PreviewJob | None = None  # the job being computed
        self.state = "idle"  # 'idle', 'preparing', 'previewing', 'fixing', 'waiting'
        #: (image name, frame) -> the model and pre-processing its features were cached for
        self.prepared: dict = {}
        self._queue: deque[PreviewJob] = deque()
        self._generation = 0
        self._requests: dict = {}  # the last preview request, to redo when a layer goes
        self._chains: dict = {}  # (image name, frame, class) -> (clicks, logits)
        self._written: dict = {}  # (image name, frame) -> what its preview was made from
        self.last: JobResult | None = None  # the last job's result (tests, benchmarks)
        self.message = ""  # the last state said
        session.running.connect(self._on_run_state)

    # -- what the person sees ---------------------------------------------------------
    def _say(self, message: str) -> None:
        """The preview's own state (the widget shows it under its switch): never over the
        session's status, which tells how the last run went."""
        self.message = message
        if self.session.alive:
            self.status.emit(message)

    def _tell(self, message: str) -> None:
        """What a fix or a clearing did: in the session's status (an action of the person)."""
        self.session.notify(message, popup=False)

    def _warn(self, message: str) -> None:
        self.session.notify(message, "warning")

    def _blocked(self) -> str | None:
        if self.session.worker is not None:
            return "a run is going"
        for blocker in self.blockers:
            reason = blocker()
            if reason:
                return reason
        return None

    # -- requests (main thread) -------------------------------------------------------
    def prepare(self, images, model_settings, settings, frames, as_channels: bool = False):
        """Compute the features of ``frames`` (``[(part, frame), ...]`` of the image set
        ``images``) in the background, into the model's feature cache. Returns the job,
        or None (nothing to do, previews off, or the reason is shown)."""
        if not self.enabled:
            return None
        images = _as_list(images)
        try:
            plan = preview_plan(images, [], as_channels)
            frames = self._check_frames(plan, images, frames)
        except PromptError as exc:
            self._say(f"preview: {exc}")
            return None
        names = tuple(im.name for im in images)
        key = _prepare_key(plan, model_settings, settings)
        todo = tuple(pf for pf in frames if self.prepared.get((names[pf[0]], pf[1])) != key)
        if not todo:
            return None
        job = PreviewJob("prepare", plan, todo, model_settings, settings, 0, names)
        return self._submit(job)

    def request(
        self, images, prompt_layers, model_settings, settings, frames, as_channels: bool = False
    ):
        """Preview the reference masks of ``frames`` (``[(part, frame), ...]``, usually
        the frame shown) from ``prompt_layers``. Returns the job, or None (the reason
        is in the status). A newer request replaces one not started yet; a result that
        a newer request made stale is dropped."""
        if not self.enabled:
            return None
        images = _as_list(images)
        layers = [layer for layer in prompt_layers if layer in self.session.viewer.layers]
        self._generation += 1
        self._requests = {
            "images": [weakref.ref(im) for im in images],
            "layers": [weakref.ref(layer) for layer in layers],
            "args": (model_settings, settings, tuple(frames), as_channels),
        }
        try:
            plan = preview_plan(images, layers, as_channels)
            frames = self._check_frames(plan, images, frames)
        except PromptError as exc:
            self._say(f"preview: {exc}")
            return None
        names = tuple(im.name for im in images)
        keys = {pf: _preview_key(plan, pf, model_settings, settings) for pf in frames}
        todo = tuple(pf for pf in frames if not self._up_to_date(names[pf[0]], pf[1], keys[pf]))
        self._queue = deque(j for j in self._queue if j.kind != "preview")  # the newest wins
        if not todo:
            return None  # every frame asked for is previewed as it is
        job = PreviewJob(
            "preview",
            plan,
            todo,
            model_settings,
            settings,
            self._generation,
            names,
            {"keys": {pf: keys[pf] for pf in todo}},
        )
        return self._submit(job)

    def _up_to_date(self, name: str, frame: int, key: tuple) -> bool:
        """Whether the preview of ``frame`` of the image ``name`` shows what ``key`` says
        (the same prompts, scaling, model and settings): then it needs no new job."""
        if self._written.get((name, frame)) != key:
            return False
        image = self._image(name)
        return image is not None and (
            self.preview_layer(image, make=False) is not None or not key[0]
        )

    def fix(
        self,
        image,
        frame: int,
        label: int,
        model_settings,
        settings,
        points=None,
        positive=None,
        box=None,
    ):
        """Redraw class ``label`` on ``frame`` of ``image``'s output layer from clicks
        (``points``: (row, col) in the image's pixels; ``positive``: their polarity,
        default all positive) and/or a ``box`` (row0, col0, row1, col1), with SAM2's
        decoder on the frame's features. Clicks that extend the last fix of this frame
        and class continue it (its logits are SAM2's mask prompt); the first fix takes
        the class's current mask as the mask prompt. The output changes as one undo
        step and the frame counts as edited by hand. Returns the job, or None (the
        reason is shown)."""
        from napari_sansa.napari import edits

        if image is None or image not in self.session.viewer.layers:
            self.session.fail(NO_IMAGE)
            return None
        output = self.session.output_layer(image)
        geometry = image_geometry(image)
        if output is None:
            self.session.fail(
                f"'{image.name}' has no output layer yet: run SANSA first, then fix a labelled "
                "frame with clicks"
            )
            return None
        if not 0 <= int(frame) < geometry.n_frames:
            self.session.fail(
                f"frame {frame} is outside '{image.name}' (frames 0..{geometry.n_frames - 1})"
            )
            return None
        frame = int(frame)
        written = (output.metadata or {}).get(edits.WRITTEN_KEY) or {}
        if frame not in written and not bool(edits.current(output, geometry, frame).any()):
            self.session.fail(
                f"{geometry.describe(frame)} of '{image.name}' was not labelled by a run (it is "
                "outside the frames labelled so far): run SANSA on it first, or add prompts "
                "there to make it a reference"
            )
            return None
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, float).reshape(-1, 2)
        pos = np.ones(len(pts), bool) if positive is None else np.asarray(positive, bool)
        h, w = geometry.hw
        outside = (pts[:, 0] < -0.5) | (pts[:, 0] > h) | (pts[:, 1] < -0.5) | (pts[:, 1] > w)
        if outside.any() or not np.isfinite(pts).all():
            r, c = pts[np.argmax(outside | ~np.isfinite(pts).all(axis=1))]
            self.session.fail(
                f"the click at (row {r:.1f}, col {c:.1f}) lies outside the {h}x{w} image "
                f"'{image.name}': click on the image"
            )
            return None
        if not len(pts) and box is None:
            self.session.fail("a fix needs at least one click or a box")
            return None
        key = (image.name, frame, int(label))
        current = edits.current(output, geometry, frame) == int(label)
        chain = self._chains.get(key)
        clicks = (pts.round(3).tobytes(), pos.tobytes(), None if box is None else tuple(box))
        extra = {}
        if chain is not None and _extends(chain[0], clicks):
            extra["logits"] = chain[1]
        else:
            if current.any():
                extra["mask"] = current
            self._chains.pop(key, None)
        if self._preparing(image.name, frame):
            self._tell(
                f"{geometry.describe(frame)} of '{image.name}' is being prepared: the click is "
                "applied as soon as its features are ready"
            )
        plan = preview_plan([image], [])
        job = PreviewJob(
            "fix",
            plan,
            ((0, frame),),
            model_settings,
            settings,
            0,
            (image.name,),
            {"label": int(label), "points": pts, "positive": pos, "box": box, "clicks": clicks,
             **extra},
        )  # fmt: skip
        return self._submit(job)

    def clear_class(self, image, frame: int, label: int, layers) -> int:
        """Remove the prompts of class ``label`` on ``frame`` of ``image`` from
        ``layers`` (Points, Shapes, Labels; the painted pixels through the layer's undo
        history) and from its fix layer; returns how many items or pixels went."""
        from napari.layers import Labels, Points, Shapes

        from napari_sansa.napari.geometry import apply_matrix, layer_to_image

        if image is None:
            self.session.fail(NO_IMAGE)
            return 0
        geometry = image_geometry(image)
        frame = int(frame)
        target = geometry.index(frame)
        layers = list(layers)
        fix = self.fix_layer(image, make=False)
        if fix is not None and fix not in layers:
            layers.append(fix)
        removed = 0
        for layer in layers:
            if layer not in self.session.viewer.layers:
                continue
            if isinstance(layer, Labels):
                if tuple(layer.data.shape) != geometry.shape:
                    continue
                block = np.asarray(layer.data[target])  # (C, H, W) with a channel axis
                found = block == label
                hit = np.nonzero(found)
                if hit[0].size:
                    # pixels of the frame (on any channel)
                    removed += int(np.count_nonzero(found.reshape(-1, *geometry.hw).any(axis=0)))
                    lead = [
                        hit[0] if isinstance(i, slice) else np.full(hit[0].size, i) for i in target
                    ]
                    with layer.block_history():  # on every channel: one undo step
                        layer.data_setitem((*lead, *hit[-2:]), 0)
                continue
            if not isinstance(layer, (Points, Shapes)) or not len(layer.data):
                continue
            labels = (
                layer.features["label"].to_numpy()
                if "label" in layer.features.columns
                else np.ones(len(layer.data), int)
            )
            matrix = layer_to_image(layer, image)
            gone = []
            for i, item in enumerate(layer.data):
                coords = apply_matrix(matrix, np.asarray(item, float))
                lead = np.rint(coords[:, :-2])
                here = not lead.shape[1] or geometry.frame(lead[0]) == frame
                if here and int(labels[i]) == int(label):
                    gone.append(i)
            if gone:  # by selection: each item goes with its own features
                selected = set(layer.selected_data)
                layer.selected_data = set(gone)
                layer.remove_selected()
                left = [i - sum(g < i for g in gone) for i in selected if i not in gone]
                layer.selected_data = set(left)
                removed += len(gone)
        self._chains.pop((image.name, frame, int(label)), None)
        self._tell(
            f"class {label}: {removed} prompt item(s)/pixel(s) removed from "
            f"{geometry.describe(frame)} of '{image.name}'"
            if removed
            else f"class {label} has no prompts on {geometry.describe(frame)} of '{image.name}'"
        )
        return removed

    def fix_layer(self, image, make: bool = True):
        """The Points layer ``<image> [sansa fix]`` whose clicks fix labelled frames (made
        when ``make``); it is not a prompt layer (its clicks make no reference)."""
        from napari.layers import Points

        from napari_sansa.napari.outputs import mark_sizes, points_layer_kwargs

        name = fix_layer_name(image.name)
        for layer in self.session.viewer.layers:
            if layer.name == name and isinstance(layer, Points):
                return layer
        if not make:
            return None
        from napari_sansa.napari.outputs import transform_kwargs

        layer = self.session.viewer.add_points(
            name=name,
            metadata={META_KEY: "fix", META_IMAGE: image.name},
            **{**points_layer_kwargs(image.ndim, 1, True), "size": mark_sizes(image)["size"]},
            **transform_kwargs(image),
        )
        layer.mode = "add"
        return layer

    def fix_box_layer(self, image, make: bool = True):
        """The Shapes layer ``<image> [sansa fix box]`` whose rectangles fix labelled
        frames (a box for the chosen class; made when ``make``); not a prompt layer."""
        from napari.layers import Shapes

        from napari_sansa.napari.outputs import mark_sizes, transform_kwargs

        name = fix_layer_name(image.name).removesuffix("]") + " box]"
        for layer in self.session.viewer.layers:
            if layer.name == name and isinstance(layer, Shapes):
                return layer
        if not make:
            return None
        layer = self.session.viewer.add_shapes(
            name=name,
            ndim=image.ndim,
            metadata={META_KEY: "fix", META_IMAGE: image.name},
            edge_color="yellow",
            face_color="transparent",
            edge_width=mark_sizes(image)["edge_width"],
            **transform_kwargs(image),
        )
        layer.mode = "add_rectangle"
        return layer

    # -- the queue ----------------------------------------------------------------------
    def _preparing(self, name: str, frame: int) -> bool:
        """Whether the features of ``frame`` of the image ``name`` are being prepared (or
        wait to be)."""
        jobs = [j for j in (self.current, *self._queue) if j is not None and j.kind == "prepare"]
        return any((j.names[p], f) == (name, frame) for j in jobs for p, f in j.frames)

    def _check_frames(self, plan: SetPlan, images, frames) -> tuple:
        out = []
        for part, frame in frames:
            if not 0 <= part < len(plan.parts):
                raise PromptError(f"there is no image {part} in the set")
            n = plan.parts[part].geometry.n_frames
            if not 0 <= frame < n:
                raise PromptError(
                    f"frame {frame} is outside '{images[part].name}' (frames 0..{n - 1})"
                )
            out.append((int(part), int(frame)))
        return tuple(out)

    def _submit(self, job: PreviewJob):
        self._queue.append(job)
        self._next()
        return job

    def _next(self) -> None:
        if self.worker is not None or not self._queue:
            return
        reason = self._blocked()
        if reason:
            self.state = "waiting"
            self._say(f"preview waits: {reason}; it is computed when that ends")
            return
        job = self.current = self._queue.popleft()
        self.state = {"prepare": "preparing", "preview": "previewing", "fix": "fixing"}[job.kind]
        (self._tell if job.kind == "fix" else self._say)(self._describe(job))
        create_worker = self.session.create_worker
        if create_worker is None:  # no Qt: at once, in this thread
            self._on_result(run_job(job, self.session.models))
            self._on_finished()
            return
        worker = create_worker(run_job, job, self.session.models, _start_thread=False)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()

    def _describe(self, job: PreviewJob) -> str:
        (part, frame) = job.frames[0]
        where = _where(job, part, frame)
        loading = "" if self.session.models.has(job.model_settings) else "loading the model, "
        if job.kind == "prepare":
            return f"{loading}preparing {where}..."
        if job.kind == "fix":
            return f"{loading}redrawing class {job.fix['label']} on {where}..."
        return f"{loading}previewing {where}..."

    def _on_run_state(self, running: bool) -> None:
        if not running:
            self._next()

    def resume(self) -> None:
        """Start the waiting work (the widget calls it when fine-tuning ends)."""
        self._next()

    def _on_errored(self, exc) -> None:
        self._say(f"preview failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.worker = self.current = None
        if self.state != "waiting":
            self.state = "idle"
        if self.session.alive:
            self._next()

    # -- results (main thread) ----------------------------------------------------------
    def _on_result(self, result: JobResult) -> None:
        self.last = result
        if not self.session.alive:
            return
        job = result.job
        if result.error:
            if job.kind == "fix":
                self._warn(f"fix: {result.error}; nothing was changed")
            else:
                self._say(f"preview: {result.error}")
            return
        if job.kind == "prepare":
            key = _prepare_key(job.plan, job.model_settings, job.settings)
            for part, frame in job.frames:
                self.prepared[(job.names[part], frame)] = key
                image = self._image(job.names[part])
                if image is not None:  # made now, so that no click waits for napari to make it
                    self.preview_layer(image, _dtype(job.plan))
            (part, frame) = job.frames[0]
            self._say(f"{_where(job, part, frame)} ready: its prompts preview at once")
            return
        if job.kind == "fix":
            self._write_fix(result)
            return
        key = _prepare_key(job.plan, job.model_settings, job.settings)
        for part, frame in job.frames:
            self.prepared[(job.names[part], frame)] = key
        if job.generation != self._generation:
            return  # a newer request is on its way
        gone = [r for r in self._requests.get("layers", []) if r() is None]
        gone += [
            r for r in self._requests.get("layers", []) if r() is not None
            and r() not in self.session.viewer.layers
        ]  # fmt: skip
        if gone:  # a prompt layer went while this was computed: preview without it
            self._redo_request()
            return
        self._write_previews(result)

    def _redo_request(self) -> None:
        req = self._requests
        images = [r() for r in req["images"]]
        if any(im is None or im not in self.session.viewer.layers for im in images):
            self._say("preview: the image was removed")
            return
        layers = [r() for r in req["layers"]]
        layers = [la for la in layers if la is not None and la in self.session.viewer.layers]
        model_settings, settings, frames, as_channels = req["args"]
        self._say("preview: a prompt layer was removed while it was computed: computed again")
        self.request(images, layers, model_settings, settings, frames, as_channels)

    def _image(self, name: str):
        from napari.layers import Image

        for layer in self.session.viewer.layers:
            if layer.name == name and isinstance(layer, Image):
                return layer
        return None

    def preview_layer(self, image, dtype=np.uint8, make: bool = True):
        """The ``<image> [sansa preview]`` Labels layer (made when ``make``); at a coarser
        level of a multiscale image ``<image> [sansa preview] (level k)``, on its pixels."""
        from napari.layers import Labels

        from napari_sansa.napari.outputs import transform_kwargs

        shape = image_geometry(image).shape
        name = at_level(preview_name(image.name), image)  # each level its own layer
        for layer in self.session.viewer.layers:
            if (
                layer.name == name
                and isinstance(layer, Labels)
                and tuple(layer.data.shape) == shape
                and (layer.metadata or {}).get(META_KEY) == "preview"
            ):
                if np.iinfo(layer.data.dtype).max < np.iinfo(dtype).max:
                    layer.data = np.asarray(layer.data).astype(dtype)
                return layer
        if not make:
            return None
        viewer = self.session.viewer
        selection = viewer.layers.selection
        active, selected = selection.active, set(selection)
        layer = viewer.add_labels(
            np.zeros(shape, dtype=dtype),
            name=name,
            metadata={META_KEY: "preview", META_IMAGE: image.name},
            opacity=0.5,
            **transform_kwargs(image),
        )
        if selection.active is not active:  # the person keeps clicking where they were
            selection.clear()
            selection.update(la for la in selected if la in viewer.layers)
            selection.active = active
        return layer

    def _write_previews(self, result: JobResult) -> None:
        job = result.job
        shown = []
        for (part, frame), labels in result.labels.items():
            image = self._image(job.names[part])
            if image is None:
                continue
            geometry = image_geometry(image)
            if geometry.hw != labels.shape or frame >= geometry.n_frames:
                continue  # the image changed meanwhile: the next request previews it
            self._written[(image.name, frame)] = job.fix["keys"][(part, frame)]
            layer = self.preview_layer(image, labels.dtype, make=bool(labels.any()))
            if layer is None:
                continue
            layer.data[geometry.index(frame)] = labels
            layer.refresh()
            classes = sorted(set(np.unique(labels).tolist()) - {0})
            what = (
                f"class{'es' if len(classes) > 1 else ''} {', '.join(map(str, classes))}"
                if classes
                else "no prompts"
            )
            shown.append(f"{_where(job, part, frame)}: {what}")
        if shown:
            self._say("preview of " + "; ".join(shown))

    def _write_fix(self, result: JobResult) -> None:
        job = result.job
        (part, frame), mask = next(iter(result.labels.items()))
        label = job.fix["label"]
        image = self._image(job.names[part])
        output = None if image is None else self.session.output_layer(image)
        if output is None:
            self._warn("fix: the image or its output layer was removed; nothing was changed")
            return
        geometry = image_geometry(image)
        if geometry.hw != mask.shape:
            self._warn("fix: the image changed meanwhile; nothing was changed")
            return
        from napari_sansa.napari import edits

        index = geometry.index(frame)
        # with a channel axis the labels are the same on every channel (as a run writes
        # them): the fix starts from the channel the person changed (else the first) and
        # writes the redrawn frame to every channel
        base = labels_array(output)  # the full resolution of a multiscale output
        plane = edits.current(output, geometry, frame)
        new = plane.copy()
        new[(plane == label) & ~mask] = 0
        new[mask & (plane == 0)] = label  # other classes keep their pixels
        if np.iinfo(base.dtype).max < label:
            self._warn(f"fix: class {label} does not fit the output layer's {base.dtype}")
            return
        block = np.asarray(base[index])  # (H, W), or (C, H, W) with a channel axis
        changed = np.nonzero(block != np.broadcast_to(new, block.shape))
        n_changed = int(np.count_nonzero(new != plane))
        if changed[0].size and output.multiscale:  # napari edits no multiscale Labels layer:
            base[index] = np.broadcast_to(new, block.shape)  # written as a run writes it
            output.refresh()  # (napari's undo does not take it)
        elif changed[0].size:
            lead = [
                changed[0] if isinstance(i, slice) else np.full(changed[0].size, i) for i in index
            ]
            spatial = changed[-2:]
            with output.block_history():  # one undo step (napari's Ctrl+Z)
                output.data_setitem((*lead, *spatial), new[spatial])
        key = (image.name, frame, label)
        self._chains[key] = (job.fix["clicks"], result.logits)
        where = geometry.describe(frame)
        undo = (
            "napari cannot undo it in a multiscale layer"
            if output.multiscale
            else "Ctrl+Z in the output layer undoes it"
        )
        self._tell(
            f"fixed class {label} on {where} of '{image.name}' ({n_changed} pixels changed; "
            f"{undo}); the frame counts as edited by hand"
        )


def _prepare_key(plan: SetPlan, model_settings, settings) -> tuple:
    """What cached features depend on besides the pixels: the model, the resize, the
    set's scaling."""
    return (repr(model_settings), settings.segment.preprocessing, plan.shared_intensity_range())


def _preview_key(plan: SetPlan, part_frame, model_settings, settings) -> tuple:
    """What the preview of ``part_frame`` is made from: its prompts, the scaling of the
    set, the model and the settings (an unchanged key needs no new preview). The first
    item is empty when the frame has no prompts."""
    import hashlib

    part, frame = part_frame
    ref = next((r for r in plan.parts[part].references if r.frame == frame), None)
    digest = hashlib.blake2b(digest_size=16)
    for prompt in () if ref is None else ref.prompts:
        digest.update(prompt.fingerprint())
    prompts = "" if ref is None else digest.hexdigest()
    shared = plan.shared_intensity_range()
    return (prompts, shared, repr(model_settings), repr(settings), plan.parts[part].intensity_range)


def _extends(before, now) -> bool:
    """Whether the clicks ``now`` are the clicks ``before`` and more (same box)."""
    pts0, pos0, box0 = before
    pts1, pos1, box1 = now
    return box0 == box1 and pts1.startswith(pts0) and pos1.startswith(pos0) and pts1 != pts0


def _as_list(images) -> list:
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _where(job: PreviewJob, part: int, frame: int) -> str:
    """'frame 3' (one image), "frame 0 of 'b'" (an image set), 't=1, z=3 (frame 11)' (a
    stack of several frame axes: the axes first, as a narrow dock cuts the line's end)."""
    where = image_geometry_of(job.plan, part).describe(frame)
    head, _, axes = where.partition(" (")
    if axes:
        where = f"{axes.rstrip(')')} ({head})"
    return f"{where} of '{job.names[part]}'" if len(job.names) > 1 else where


def image_geometry_of(plan: SetPlan, part: int):
    return plan.parts[part].geometry
