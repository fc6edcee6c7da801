"""Objects refined by SAM2: one decoder pass per object, its box as the prompt.

Each object (:attr:`Prediction.objects`) is given to SAM2's mask decoder with its
bounding box as the prompt, on the image's features; the refined masks redraw the
borders between the objects of a class: a pixel of class ``c`` goes to the object of
class ``c`` whose refined mask claims it with the highest logit; pixels no refined mask
claims keep their object. The class map is not changed (no object grows outside its
class), and ids stay those of :attr:`Prediction.objects` (an object whose every pixel
is claimed by its neighbours is gone).

**No second encoding.** In a run (``instances={"refine": True}`` of ``segment``,
``segment_dataset``, ``--refine``) a :class:`RunRefiner` holds the features the run
computes for its targets (on the CPU) until the target's objects are refined, then drops
them: each target (or tile) is encoded once, whatever the feature cache's size (even
with the cache off, as in ``segment_dataset``). :func:`refine_objects` (after a run)
takes the features from the model's feature cache, and encodes only what it no longer
holds.

**Tiles.** An object of a tiled prediction is refined on the features of the tile that
holds its box best: the tile whose window holds most of the box, ties going to the one
where the box is farthest from the window's inner edges; its box is clipped to that
window. In a run, the candidates are the tiles with foreground (a class above the
threshold somewhere in the tile): their features are held until the image is done
(about 16 MB a tile with the released 1024 px models), the other tiles' are dropped
as soon as they are decoded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE

__all__ = ["FeatureHold", "RunRefiner", "refine_objects"]


@dataclass(frozen=True)
class _Preprocessing:
    """What the model's image loading and encoding read of a run's settings."""

    input_size: int | None
    intensity_range: tuple | None


class FeatureHold:
    """Features a run computed, kept (on the CPU) until a refinement takes them.

    While a hold is armed (``model.features.arm``) the model keys images by content (as
    with a feature cache) and puts every image's features in it
    (:meth:`~napari_sansa.core.features.ImageFeatures.encode`);
    a tiled run records the keys of each target's tiles with foreground (``tile_keys``)
    and drops the others' features (:meth:`keep_tiles`).
    """

    def __init__(self):
        self._items: OrderedDict[str, object] = OrderedDict()
        self.tile_keys: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, features) -> None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            else:
                self._items[key] = features.to("cpu")

    def get(self, key: str):
        with self._lock:
            return self._items.get(key)

    def keep_tiles(self, what: str, tiles, keys, results, threshold: float) -> None:
        """After a batch of ``tiles`` of target ``what`` is decoded: keep the features
        of the tiles where a class is above ``threshold`` somewhere (``results``: per
        tile ``{class: (low-res logits, score)}``), drop the others'. Every object lies
        in the kept part of a tile with foreground, so it always has a tile to be
        refined on (bilinear upsampling never exceeds the low-res maximum)."""
        cut = float(np.log(threshold / (1.0 - threshold))) if 0 < threshold < 1 else 0.0
        for t, key, result in zip(tiles, keys, results, strict=True):
            if any(float(low.max()) > cut for low, _ in result.values()):
                self.tile_keys[(what, t.index)] = key
        with self._lock:
            wanted = set(self.tile_keys.values())
            for key in keys:
                if key not in wanted:
                    self._items.pop(key, None)

    def release(self, used: list[str], what: str) -> None:
        """Drop the features ``used`` by the refinement of target ``what``, those of its
        tiles, and everything held before them (the references', earlier targets')."""
        with self._lock:
            keys = list(self._items)
            mine = set(used) | {k for (w, _), k in self.tile_keys.items() if w == what}
            last = max((i for i, k in enumerate(keys) if k in mine), default=-1)
            for k in keys[: last + 1]:
                del self._items[k]
            for k in [k for k in self.tile_keys if k[0] == what]:
                del self.tile_keys[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.tile_keys.clear()


class RunRefiner:
    """Refines the objects of a run's targets on the features the run computed.

    ``watch(targets)`` wraps the run's targets: when the first target is read (the
    references are prepared by then) the hold is armed, and each target image is kept
    (a reference to it, not a copy) until its prediction is refined.
    """

    def __init__(self, model, settings, batch: int = 32):
        self.model = model
        self.settings = settings
        self.batch = batch
        self.hold = FeatureHold()
        self.images: dict[int, object] = {}

    def watch(self, targets):
        # disarmed by close(): the last targets are refined after they are read
        for i, image in enumerate(targets):
            self.model.features.arm(self.hold)
            self.images[i] = image
            yield image

    def refine(self, prediction):
        """``(objects, table)`` of one target prediction of the run, refined."""
        image = self.images.pop(prediction.index)
        return _refine(self.model, image, prediction, self.settings, self.hold, self.batch)

    def close(self) -> None:
        self.model.features.disarm(self.hold)
        self.hold.clear()
        self.images.clear()


def refine_objects(
    model, image, prediction, *, input_size=DEFAULT_INPUT_SIZE, intensity_range=None, batch=32
):
    """``(objects, table)``: ``prediction``'s objects refined by SAM2 box prompts.

    ``image`` is the image ``prediction`` was made from; ``input_size`` and
    ``intensity_range`` must be those of that run (they select its cached features).
    A tiled prediction's objects are refined on its tiles (the tile size and halo are
    the prediction's). In a run, ``instances={"refine": True}`` does this without
    relying on the cache.
    """
    from napari_sansa.core.images import check_input_size, check_range

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(f"batch must be a whole number >= 1, got {batch!r}")
    pre = _Preprocessing(
        check_input_size(input_size),
        None if intensity_range is None else check_range(intensity_range),
    )
    return _refine(model, image, prediction, pre, None, batch)


class _View:
    """A window of the image with its features: the whole image, or one tile."""

    def __init__(self, rows: slice, cols: slice, load):
        self.rows, self.cols = rows, cols
        self.load = load  # () -> LoadedImage (its rgb None when its features are held)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start


def _views(model, image, prediction, pre, hold) -> list[_View]:
    from napari_sansa.core.features import LoadedImage
    from napari_sansa.core.images import image_hw
    from napari_sansa.core.tiling import StitchedLogits, TiledImage

    hw = tuple(prediction.shape)
    given = tuple(image_hw(image, "image"))
    if given != hw:
        raise InvalidInputError(
            f"the image is {given[0]}x{given[1]} but the prediction {hw[0]}x{hw[1]}: give the "
            "image the prediction was made from"
        )
    if not isinstance(prediction.logits, StitchedLogits):

        def load():
            return model.features.load(image, "image", pre)

        return [_View(slice(0, hw[0]), slice(0, hw[1]), load)]
    what = f"target {prediction.index}"
    grid = prediction.logits.grid
    src: list = []  # the TiledImage, made only if a tile must be encoded

    def loader(t):
        def load():
            key = hold.tile_keys.get((what, t.index)) if hold is not None else None
            if key is not None and key in hold:
                return LoadedImage(key, t.shape, None)
            if not src:
                src.append(TiledImage(image, grid, pre.intensity_range, what))
            return model.features.load_tile(src[0], t, pre)

        return load

    views = [_View(t.rows, t.cols, loader(t)) for t in grid]
    if hold is not None:  # in a run: the tiles with foreground, whose features are held
        held = [v for v, t in zip(views, grid, strict=True) if (what, t.index) in hold.tile_keys]
        views = held or views
    return views


def _fit(box, view: _View, hw) -> tuple[int, float]:
    """How well ``view``'s window holds ``box``: (pixels of the box inside, the least
    distance from the box to a window edge that is not an image edge)."""
    r0, c0, r1, c1 = box
    rows, cols = view.rows, view.cols
    inside = max(0, min(r1, rows.stop) - max(r0, rows.start)) * max(
        0, min(c1, cols.stop) - max(c0, cols.start)
    )
    gaps = [
        r0 - rows.start if rows.start > 0 else np.inf,
        rows.stop - r1 if rows.stop < hw[0] else np.inf,
        c0 - cols.start if cols.start > 0 else np.inf,
        cols.stop - c1 if cols.stop < hw[1] else np.inf,
    ]
    return inside, float(min(gaps))


def _features(model, view: _View, pre, hold):
    loaded = view.load()
    held = hold.get(loaded.key) if hold is not None else None
    if held is not None:
        return loaded.key, held.to(model.device)
    return loaded.key, model.features.encode([loaded], pre)


def _refine(model, image, prediction, pre, hold, batch: int):
    from napari_sansa.core.objects import object_table

    views = _views(model, image, prediction, pre, hold)
    hw = tuple(prediction.shape)
    objects, classes = prediction.objects, prediction.labels
    table = prediction.object_table
    refined = objects.copy()
    used: list[str] = []
    if len(table):
        best = np.full(hw, -np.inf, dtype=np.float32)
        members: dict[int, list] = {}
        for i in range(len(table)):
            box = _box(table, i)
            v = max(range(len(views)), key=lambda k: (_fit(box, views[k], hw), -k))
            members.setdefault(v, []).append((int(table["object"][i]), int(table["class"][i]), box))
        with model.features.compute():
            for v in sorted(members):
                view = views[v]
                key, feats = _features(model, view, pre, hold)
                used.append(key)
                rows = members[v]
                for start in range(0, len(rows), batch):
                    part = rows[start : start + batch]
                    _decode_part(model, feats, view, part, (refined, best, classes))
    if hold is not None:
        hold.release(used, f"target {prediction.index}")
    if not len(table):
        return refined, table
    return refined, object_table(refined, classes, prediction.probabilities)


def _decode_part(model, feats, view, part, maps):
    """Decode the objects ``part`` on ``view``'s features; claim their pixels in
    ``maps`` = (refined object ids, best logit so far, class map)."""
    import torch
    import torch.nn.functional as F

    from napari_sansa.core.preprocess import sparse_prompts_to_input as to_input
    from napari_sansa.core.prompts import Box

    refined, best, classes = maps
    r_off, c_off = view.rows.start, view.cols.start
    vh, vw = view.shape
    windows = []
    prompts = []
    for _, _, (r0, c0, r1, c1) in part:
        # the box clipped to the window, in the window's coordinates
        w = (max(r0, r_off), max(c0, c_off), min(r1, view.rows.stop), min(c1, view.cols.stop))
        windows.append(w)
        prompts.append(to_input([Box((w[0] - r_off, w[1] - c_off, w[2] - r_off, w[3] - c_off))],
                                (vh, vw), model.image_size))  # fmt: skip
    coords = torch.from_numpy(np.stack([c for c, _ in prompts])).to(model.device)
    labels = torch.from_numpy(np.stack([lab for _, lab in prompts])).to(model.device)
    out = model.engine.decode_sparse_prompt(feats.repeat_interleave(len(part)), coords, labels)
    up = F.interpolate(out.low_res.float(), size=(vh, vw), mode="bilinear", align_corners=False)
    up = up[:, 0].cpu().numpy()
    for (oid, c, _), (r0, c0, r1, c1), logits in zip(part, windows, up, strict=True):
        win = logits[r0 - r_off : r1 - r_off, c0 - c_off : c1 - c_off]
        here = (slice(r0, r1), slice(c0, c1))
        claim = (classes[here] == c) & (win > 0) & (win > best[here])
        refined[here][claim] = oid
        best[here][claim] = win[claim]


def _box(table, i: int) -> tuple[int, int, int, int]:
    return tuple(int(table[f"bbox_{k}"][i]) for k in ("min_row", "min_col", "max_row", "max_col"))
