"""Objects followed by SAM2: each object's mask carried from a frame to the next.

The tracker's other way to link (``track_objects(..., moved=...)``): instead of asking
where an object *overlaps* the next frame, SAM2 is asked where it *went*. For each pair
of frames ``t - 1``, ``t`` of a time-lapse, every object of ``t - 1`` is given to SAM2 as
a mask on that frame and propagated to frame ``t`` by SAM2's memory attention, as a
SAM2 video predictor does with a mask given on one frame (and as SANSA does with a
reference given as a mask):

1. frame ``t - 1``: the object's mask is the output (``+-10`` logits) and its object
   pointer comes from the mask decoder with the mask as dense prompt;
2. the memory encoder turns frame ``t - 1``'s features and that mask into a memory
   entry (temporal slot 0, a conditioning frame);
3. frame ``t``: its features, conditioned on that memory (and the object pointer) by the
   memory attention, are decoded with no prompt; the mask logits are brought back to
   the frame's size.

Each object is followed on its own (a batch of objects goes through each step
together); where the propagated masks of two objects overlap, the pixel goes to the
higher logit. The result, ``moved[t]``, holds at each pixel of frame ``t`` the id of
the object of frame ``t - 1`` that SAM2 carried there (0: none); ``moved[0]`` is empty.
On a ``(T, Z, Y, X)`` stack each plane is propagated to the same plane of the next time
point (SAM2 sees 2D images).

**Features.** The images are loaded and encoded through the model's
:class:`~napari_sansa.core.features.ImageFeatures`, as in a run and with the run's
pre-processing (``input_size``, ``intensity_range``: give the run's): an image whose
features the model's feature cache (memory or disk) or a run's hold still has is not
encoded again, and :attr:`ObjectPropagation.encoded` counts those that were. Only two
time points' features are kept at a time, and a frame (plane) is loaded only to carry
objects from it or into it: one without objects after one without objects, or without
objects itself (nothing to link to there), is not read (e.g. the frames outside the
range a run labelled).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE, image_hw

__all__ = ["ObjectPropagation", "propagate_objects"]


class _Preprocessing:
    """What the model's image loading reads of a run's settings."""

    def __init__(self, input_size, intensity_range):
        from napari_sansa.core.images import check_input_size, check_range

        self.input_size = check_input_size(input_size)
        self.intensity_range = None if intensity_range is None else check_range(intensity_range)


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


class ObjectPropagation:
    """Follows the objects of a time-lapse from frame to frame with SAM2 (see the module).

    ``model``: a :class:`~napari_sansa.SansaModel`; ``images``: the frames the objects
    were made from, ``images[t]`` (a ``(T, Z, Y, X)`` object stack: ``images[t][z]``),
    each as ``segment`` takes an image; ``input_size``, ``intensity_range``: those of
    the run that made the objects (they select its features); ``batch``: objects
    decoded together; ``cancel``: a ``threading.Event`` (or a callable returning True)
    that stops :meth:`frames` between frames.

    :attr:`encoded` counts the images encoded because neither the feature cache nor a
    run held their features; :attr:`reused` those taken from there.
    """

    def __init__(
        self,
        model,
        images,
        *,
        input_size=DEFAULT_INPUT_SIZE,
        intensity_range=None,
        batch: int = 16,
        cancel=None,
    ):
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise InvalidInputError(f"batch must be a whole number >= 1, got {batch!r}")
        if not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
            raise InvalidInputError(
                "images must be the time-lapse's frames, indexable by time (a list or an "
                f"array), got {type(images).__name__}"
            )
        self.model = model
        self.images = images
        self.pre = _Preprocessing(input_size, intensity_range)
        self.batch = int(batch)
        self.cancel = cancel
        self.encoded = 0
        self.reused = 0
        self._held: dict[tuple[int, int | None], object] = {}

    # -- features ---------------------------------------------------------------------
    def _image(self, t: int, z: int | None):
        return self.images[t] if z is None else self.images[t][z]

    def _features(self, t: int, z: int | None, hw):
        key = (t, z)
        if key in self._held:
            return self._held[key]
        what = f"frame {t}" if z is None else f"frame {t}, plane {z}"
        image = self._image(t, z)
        got = tuple(image_hw(image, what))
        if got != tuple(hw):
            raise InvalidInputError(
                f"{what} of the images is {got[0]}x{got[1]} but the objects' frames are "
                f"{hw[0]}x{hw[1]}: give the images the objects were made from"
            )
        features = self.model.features
        loaded = features.load(image, what, self.pre)
        had = loaded.keyed and (
            any(loaded.key in h for h in features.holds)
            or features.cache.get(loaded.key) is not None
        )
        feats = features.encode([loaded], self.pre)
        if had:
            self.reused += 1
        else:
            self.encoded += 1
        self._held[key] = feats
        return feats

    def _keep_only(self, t: int) -> None:
        for key in [k for k in self._held if k[0] != t]:
            del self._held[key]

    # -- one plane ----------------------------------------------------------------------
    def _plane(self, t: int, z: int | None, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """Frame ``t``'s (plane ``z``'s) moved map: the ids of ``prev`` (frame ``t - 1``'s
        objects on that plane) where SAM2 carries them; nothing where ``cur`` (frame
        ``t``'s objects there) is empty: no object there to link to."""
        import torch
        import torch.nn.functional as F

        from napari_sansa.core.preprocess import mask_to_input

        hw = prev.shape
        moved = np.zeros(hw, dtype=prev.dtype)
        ids = np.unique(prev)
        ids = ids[ids != 0]
        if not ids.size or not cur.any():  # frame t's features: when its objects are carried
            return moved
        model = self.model
        engine = model.engine
        size = engine.image_size
        best = np.full(hw, -np.inf, dtype=np.float32)
        with model.features.compute():
            before = self._features(t - 1, z, hw)
            after = self._features(t, z, hw)
            for start in range(0, len(ids), self.batch):
                part = ids[start : start + self.batch]
                masks = torch.stack(
                    [
                        mask_to_input(prev == i, size, self.pre.input_size, model.device)[0]
                        for i in part
                    ]
                )
                n = len(part)
                first = before.repeat_interleave(n)
                given = engine.decode_mask_prompt(first, masks)
                memory = engine.gather({0: engine.memory(first, given)}, 1)
                out = engine.decode_with_memory(after.repeat_interleave(n), memory)
                up = F.interpolate(out.low_res.float(), size=hw, mode="bilinear")
                up = up[:, 0].cpu().numpy()
                for i, logits in zip(part, up, strict=True):
                    claim = (logits > 0) & (logits > best)
                    moved[claim] = i
                    best[claim] = logits[claim]
        return moved

    # -- a stack ------------------------------------------------------------------------
    def frames(self, objects) -> Iterator[tuple[int, np.ndarray]]:
        """``(t, moved[t])`` for ``t = 1 .. T - 1`` of a ``(T, Y, X)`` or ``(T, Z, Y, X)``
        object stack (numpy, memory-mapped, zarr or dask: read one frame at a time)."""
        shape = tuple(getattr(objects, "shape", ()))
        if len(shape) not in (3, 4):
            raise InvalidInputError(
                f"objects must be (T, Y, X) or (T, Z, Y, X) object ids, got shape {shape}"
            )
        if len(self.images) != shape[0]:
            raise InvalidInputError(
                f"there are {len(self.images)} images for {shape[0]} frames of objects: give "
                "one image per frame, those the objects were made from"
            )
        if len(shape) == 4:
            for t in (0, shape[0] - 1):
                planes = len(self.images[t]) if hasattr(self.images[t], "__len__") else None
                if planes != shape[1]:
                    raise InvalidInputError(
                        f"frame {t} of the images has {planes} planes, the objects {shape[1]}: "
                        "give images[t][z], the planes the objects were made from"
                    )
        return self._frames(objects, shape)

    def _frames(self, objects, shape):
        from napari_sansa.core.tracks import read_frame

        prev = None
        for t in range(shape[0]):
            if _is_cancelled(self.cancel):
                return
            frame = read_frame(objects, t)
            if frame.dtype.kind not in "iu":
                raise InvalidInputError(
                    f"objects must hold integer object ids (0 = background), got {frame.dtype}"
                )
            if prev is not None:
                if len(shape) == 3:
                    moved = self._plane(t, None, prev, frame)
                else:
                    moved = np.stack(
                        [self._plane(t, z, prev[z], frame[z]) for z in range(shape[1])]
                    )
                self._keep_only(t)
                yield t, moved
            prev = frame
        self._held.clear()


def propagate_objects(
    model,
    images,
    objects,
    *,
    input_size=DEFAULT_INPUT_SIZE,
    intensity_range=None,
    batch: int = 16,
    out=None,
):
    """Where SAM2 carries each object of every frame in the next one (see the module).

    ``objects``: ``(T, Y, X)`` or ``(T, Z, Y, X)`` object ids (ids unrelated from frame to
    frame; numpy, memory-mapped, zarr or dask); ``images``: the frames they were made
    from (``images[t]``, or ``images[t][z]``), with the run's ``input_size`` and
    ``intensity_range``. Returns ``moved``, of the objects' shape: ``moved[t]`` holds the
    ids of frame ``t - 1``'s objects where SAM2 puts them in frame ``t`` (``moved[0]`` is
    empty); ``out``: an array of that shape to write into (e.g. a memory map). Give it
    to :func:`~napari_sansa.track_objects` as ``moved=``.
    """
    from napari_sansa.core.tracks import PredictionFrames, are_predictions

    if are_predictions(objects):
        objects = PredictionFrames(list(objects), "objects")
    run = ObjectPropagation(
        model, images, input_size=input_size, intensity_range=intensity_range, batch=batch
    )
    frames = run.frames(objects)
    shape = tuple(objects.shape)
    if out is None:
        out = np.zeros(shape, dtype=np.dtype(objects.dtype))
    elif tuple(getattr(out, "shape", ())) != shape:
        raise InvalidInputError(f"out must have the objects' shape {shape}")
    else:
        out[0] = 0
    for t, moved in frames:
        out[t] = moved
    return out
