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
together). Its carried mask is kept near where the object was (its box grown by
``reach`` pixels, by default three times its diameter): SANSA's adapted features are
made to find every object of a class in a new image, so the mask of one cell carried
alone may also light up its look-alikes. Where the kept masks of two objects overlap,
the pixel goes to the higher logit. The result, ``moved[t]``, holds at each pixel of
frame ``t`` the id of the object of frame ``t - 1`` that SAM2 carried there (0: none);
``moved[0]`` is empty. On a ``(T, Z, Y, X)`` stack each plane is propagated to the same
plane of the next time point (SAM2 sees 2D images).

**Features.** The images are loaded and encoded through the model's
:class:`~napari_sansa.core.features.ImageFeatures`, as in a run and with the run's
pre-processing (``input_size``, ``intensity_range``: give the run's): an image whose
features the model's feature cache (memory or disk) or a run's hold still has is not
encoded again, and :attr:`ObjectPropagation.encoded` counts those that were. Only two
time points' features are kept at a time (on the CPU), the pairs taken from the last
back to the first (after a run the cache holds the latest frames: they are used before
they could be pushed out, so a time-lapse larger than the cache encodes only the frames
it no longer holds), and a frame (plane) is loaded only to carry
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

__all__ = ["FramesByTime", "ObjectPropagation", "propagate_objects"]


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
    decoded together; ``reach``: how far (pixels) from an object's box its carried mask
    is kept (None: three times the object's diameter); ``cancel``: a
    ``threading.Event`` (or a callable returning True) that stops :meth:`frames`
    between frames.

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
        reach: float | None = None,
        cancel=None,
    ):
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise InvalidInputError(f"batch must be a whole number >= 1, got {batch!r}")
        if reach is not None and (
            isinstance(reach, bool)
            or not isinstance(reach, numbers.Real)
            or not np.isfinite(reach)
            or reach <= 0
        ):
            raise InvalidInputError(f"reach must be a distance in pixels above 0, got {reach!r}")
        if not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
            raise InvalidInputError(
                "images must be the time-lapse's frames, indexable by time (a list or an "
                f"array), got {type(images).__name__}"
            )
        self.model = model
        self.images = images
        self.pre = _Preprocessing(input_size, intensity_range)
        self.batch = int(batch)
        self.reach = None if reach is None else float(reach)
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
        found = None
        if loaded.keyed:  # looked up once (a disk cache entry is read once)
            found = next((h.get(loaded.key) for h in features.holds if loaded.key in h), None)
            if found is None:
                found = features.cache.get(loaded.key)
        if found is not None:
            self.reused += 1
        else:
            self.encoded += 1
            found = features.encode([loaded], self.pre)
        # held on the CPU (a z-stack's planes of two time points), moved when used
        self._held[key] = found.to("cpu")
        return self._held[key]

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
        windows = self._windows(prev, ids)
        with model.features.compute():
            before = self._features(t - 1, z, hw).to(model.device)
            after = self._features(t, z, hw).to(model.device)
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
                    r0, r1, c0, c1 = windows[int(i)]
                    win = logits[r0:r1, c0:c1]
                    here = (slice(r0, r1), slice(c0, c1))
                    claim = (win > 0) & (win > best[here])
                    moved[here][claim] = i
                    best[here][claim] = win[claim]
        return moved

    def _windows(self, prev: np.ndarray, ids) -> dict[int, tuple[int, int, int, int]]:
        """Per object, the window its carried mask is kept in: its box in ``prev`` grown
        by :attr:`reach` pixels (None: three times its own diameter) on every side."""
        from scipy import ndimage

        h, w = prev.shape
        compact = np.zeros(prev.shape, np.int64)  # ids may be large (unique in a stack)
        fg = prev != 0
        compact[fg] = np.searchsorted(ids, prev[fg]) + 1
        boxes = ndimage.find_objects(compact)
        areas = np.bincount(compact.ravel(), minlength=len(ids) + 1)[1:]
        out = {}
        for k, i in enumerate(ids):
            i = int(i)
            rows, cols = boxes[k]
            if self.reach is None:
                grow = int(np.ceil(3 * 2 * np.sqrt(areas[k] / np.pi)))
            else:
                grow = int(np.ceil(self.reach))
            out[i] = (
                max(rows.start - grow, 0),
                min(rows.stop + grow, h),
                max(cols.start - grow, 0),
                min(cols.stop + grow, w),
            )
        return out

    # -- a stack ------------------------------------------------------------------------
    def frames(self, objects) -> Iterator[tuple[int, np.ndarray]]:
        """``(t, moved[t])`` for ``t = T - 1`` down to ``1`` (the last frames first: see
        :meth:`_frames`) of a ``(T, Y, X)`` or ``(T, Z, Y, X)`` object stack (numpy,
        memory-mapped, zarr or dask: read one frame at a time)."""
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
        """From the last pair of frames back to the first: after a run the feature cache
        holds the latest frames, so they are used before they can be pushed out; each
        frame of the objects is read once."""
        from napari_sansa.core.tracks import read_frame

        def read(t):
            frame = read_frame(objects, t)
            if frame.dtype.kind not in "iu":
                raise InvalidInputError(
                    f"objects must hold integer object ids (0 = background), got {frame.dtype}"
                )
            return frame

        cur = read(shape[0] - 1) if shape[0] > 1 else None
        for t in range(shape[0] - 1, 0, -1):
            if _is_cancelled(self.cancel):
                break
            prev = read(t - 1)
            if len(shape) == 3:
                moved = self._plane(t, None, prev, cur)
            else:
                moved = np.stack([self._plane(t, z, prev[z], cur[z]) for z in range(shape[1])])
            self._keep_only(t - 1)
            yield t, moved
            cur = prev
        self._held.clear()


class FramesByTime:
    """A stack's images by time point, read lazily: ``frames[t]`` (``n_planes`` None) or
    ``frames[t][z]``, each read by ``read(t, z)`` (``z`` None for a time-lapse) only when
    asked for (so a z-stack's plane is read when that plane is carried, not all of them)."""

    def __init__(self, read, n_times: int, n_planes: int | None = None):
        self.read, self.n_times, self.n_planes = read, int(n_times), n_planes

    def __len__(self) -> int:
        return self.n_times

    def __getitem__(self, t):
        t = int(t)
        if not 0 <= t < self.n_times:
            raise IndexError(t)
        if self.n_planes is None:
            return self.read(t, None)
        return _Planes(self.read, t, self.n_planes)


class _Planes:
    def __init__(self, read, t: int, n: int):
        self.read, self.t, self.n = read, t, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, z):
        z = int(z)
        if not 0 <= z < self.n:
            raise IndexError(z)
        return self.read(self.t, z)


def propagate_objects(
    model,
    images,
    objects,
    *,
    input_size=DEFAULT_INPUT_SIZE,
    intensity_range=None,
    batch: int = 16,
    reach: float | None = None,
    out=None,
):
    """Where SAM2 carries each object of every frame in the next one (see the module).

    ``objects``: ``(T, Y, X)`` or ``(T, Z, Y, X)`` object ids (ids unrelated from frame to
    frame; numpy, memory-mapped, zarr or dask); ``images``: the frames they were made
    from (``images[t]``, or ``images[t][z]``), with the run's ``input_size`` and
    ``intensity_range``. Returns ``moved``, of the objects' shape: ``moved[t]`` holds the
    ids of frame ``t - 1``'s objects where SAM2 puts them in frame ``t`` (``moved[0]`` is
    empty); ``out``: an array of that shape to write into (e.g. a memory map). Give it
    to :func:`~napari_sansa.track_objects` as ``moved=``. ``reach``: how far (pixels)
    from an object's box in frame ``t - 1`` its carried mask is kept (None: three times
    the object's diameter): SANSA's features are made to find *every* object of a class
    in a new image, so a carried mask may light up the object's look-alikes too; only
    the part near where the object was counts.
    """
    from napari_sansa.core.tracks import PredictionFrames, are_predictions

    if are_predictions(objects):
        objects = PredictionFrames(list(objects), "objects")
    run = ObjectPropagation(
        model,
        images,
        input_size=input_size,
        intensity_range=intensity_range,
        batch=batch,
        reach=reach,
    )
    frames = run.frames(objects)
    shape = tuple(objects.shape)
    dtype = np.dtype(objects.dtype)
    if out is None:
        out = np.zeros(shape, dtype=dtype)
    else:
        odt = np.dtype(getattr(out, "dtype", np.float64))
        if tuple(getattr(out, "shape", ())) != shape or not np.can_cast(dtype, odt):
            raise InvalidInputError(
                f"out must be an array of the objects' shape {shape} whose dtype holds their "
                f"ids ({dtype} or wider), got {odt} {tuple(getattr(out, 'shape', ()))}"
            )
        out[0] = 0
    for t, moved in frames:
        out[t] = moved
    return out
