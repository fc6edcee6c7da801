"""Large images by tiles: a tile grid, tiles read one at a time, and seamless stitching.

SAM2 sees every image (or tile) at its square input size. A large image is cut into
tiles of ``tile_size`` x ``tile_size`` pixels of the original image that overlap: the
part a tile keeps (its *own* part) is at least ``halo`` pixels away from every tile
edge that is not an image edge. Tiles start at the top-left corner every
``tile_size - 2 * halo`` pixels; the last tile of a row or column is moved back to end
at the image's edge. An image no larger than ``tile_size`` on a side is one tile along
that side, so an image no larger than a tile is not tiled at all.

**Stitching.** Each pixel comes from the one tile in which it lies farthest from a
tile edge (per axis: the own parts are the centres of the tiles and cut every overlap
in its middle). No value is blended, so one tile covering the whole image gives the
untiled result exactly, and with ``halo=0`` and a tile size that divides the image
every tile is exactly "a target of its own". A seam could only appear where two tiles
disagree about the middle of their overlap, ``halo`` pixels from both their edges.

**Memory.** A tile is read from the image (``image[rows, cols]``: numpy, memory-mapped
TIFF, dask, zarr) only when it is encoded; what is kept per tile is SAM2's low
resolution logits (``(S/4)^2`` per class), upsampled to the tile only when the result
is read. ``Prediction.logits[c]`` stitches class ``c`` at the image's full size;
:func:`iter_blocks` and :func:`write_labels` give the result one tile at a time
(e.g. into a memory-mapped output) without ever holding the whole image.

**References** larger than a tile are tiled the same way; each tile whose own part holds
a prompt becomes a reference (see :mod:`napari_sansa.core.tile_prompts`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError, OptionError
from napari_sansa.core.images import drop_alpha, image_hw, scale_to_unit

__all__ = [
    "StitchedLogits",
    "Tile",
    "TileSpec",
    "iter_blocks",
    "tile_grid",
    "write_labels",
]

#: logits given to the pixels of a decoded reference that no prompted tile owns
BACKGROUND_LOGIT = -20.0
#: the smallest tile side, in image pixels: SAM2 enlarges each tile to its input size
#: (1024 px for the released weights) and sees it through a 64 x 64 grid of image
#: features (stride 16), so a 64-pixel tile already gives every pixel a feature of its
#: own. A smaller tile adds no detail (only enlarged blur), holds too little of the image
#: to recognise anything in, and multiplies the passes (one per tile: a 256 x 256 image
#: is 441 tiles of 16, 25 of 64)
MIN_TILE_SIZE = 64


@dataclass(frozen=True)
class TileSpec:
    """``tile_size`` and ``halo`` as checked; ``halo=None`` is ``tile_size // 8``.

    ``tile_size`` is at least :data:`MIN_TILE_SIZE`, ``halo`` at least 0 and less than
    half the tile (the tile's own part between two halos must hold a pixel)."""

    tile_size: int
    halo: int

    @classmethod
    def make(cls, tile_size, halo=None) -> TileSpec | None:
        if tile_size is None:
            if halo not in (None, 0):
                raise OptionError(
                    "halo",
                    halo,
                    "given only with {tile_size}",
                    fix="set {tile_size} to tile images",
                )
            return None
        for name, value in (("tile_size", tile_size), ("halo", halo)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral)
            ):
                raise OptionError(name, value, "a whole number of pixels")
        tile_size = int(tile_size)
        if tile_size < MIN_TILE_SIZE:
            raise OptionError(
                "tile_size",
                tile_size,
                f"at least {MIN_TILE_SIZE} pixels",
                fix="SAM2 enlarges each tile to its input size and sees it through a "
                f"{MIN_TILE_SIZE} x {MIN_TILE_SIZE} grid of image features, so a smaller tile "
                "adds no detail, holds too little of the image to recognise anything, and "
                "multiplies the passes of the model (one per tile); typical tiles are "
                "512-2048 pixels, and without {tile_size} images are segmented whole",
            )
        halo = tile_size // 8 if halo is None else int(halo)
        if halo < 0:
            raise OptionError("halo", halo, ">= 0 pixels (the overlap kept around each tile)")
        if tile_size <= 2 * halo:
            raise OptionError(
                "tile_size",
                tile_size,
                f"larger than 2 x {{halo}} = {2 * halo}, or the {{halo}} smaller",
                fix=f"it leaves nothing between two halos of {halo} pixels",
            )
        return cls(tile_size, halo)

    def grid(self, shape) -> list[Tile]:
        """The tiles of an image of ``shape`` (see :func:`tile_grid`)."""
        return tile_grid(shape, self.tile_size, self.halo)


@dataclass(frozen=True)
class Tile:
    """One tile: the window read from the image (``rows``, ``cols``) and its own part
    (``own_rows``, ``own_cols``), both in image pixels; the own parts of a grid's tiles
    partition the image."""

    index: int
    rows: slice
    cols: slice
    own_rows: slice
    own_cols: slice

    @property
    def origin(self) -> tuple[int, int]:
        return self.rows.start, self.cols.start

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    @property
    def own_in_tile(self) -> tuple[slice, slice]:
        """The own part in the tile's coordinates."""
        r, c = self.origin
        return (
            slice(self.own_rows.start - r, self.own_rows.stop - r),
            slice(self.own_cols.start - c, self.own_cols.stop - c),
        )

    @property
    def own_area(self) -> int:
        return (self.own_rows.stop - self.own_rows.start) * (
            self.own_cols.stop - self.own_cols.start
        )

    def owns(self, rc: np.ndarray, hw) -> np.ndarray:
        """Which ``(row, col)`` coordinates (of an ``hw`` image) lie in the own part: the
        pixel that holds each one (pixel centres at integers, clamped to the image)."""
        r, c = _pixel(rc[:, 0], hw[0]), _pixel(rc[:, 1], hw[1])
        return (
            (r >= self.own_rows.start)
            & (r < self.own_rows.stop)
            & (c >= self.own_cols.start)
            & (c < self.own_cols.stop)
        )

    def holds(self, rc: np.ndarray) -> np.ndarray:
        """Which ``(row, col)`` coordinates lie inside the window, [start - 0.5, stop - 0.5)
        on each axis."""
        return (
            (rc[:, 0] >= self.rows.start - 0.5)
            & (rc[:, 0] < self.rows.stop - 0.5)
            & (rc[:, 1] >= self.cols.start - 0.5)
            & (rc[:, 1] < self.cols.stop - 0.5)
        )


def _pixel(coords: np.ndarray, n: int) -> np.ndarray:
    """The pixel index of coordinates (pixel centres at integers), clamped to the image."""
    return np.clip(np.floor(coords + 0.5), 0, n - 1).astype(np.int64)


def _axis(n: int, size: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Along one axis of ``n`` pixels: ``(start, stop, own_start, own_stop)`` per tile."""
    if n <= size:
        return [(0, n, 0, n)]
    stride = size - 2 * halo
    count = math.ceil((n - size) / stride) + 1
    starts = [min(i * stride, n - size) for i in range(count)]
    cuts = (
        [0]
        + [(s + prev + size) // 2 for prev, s in zip(starts[:-1], starts[1:], strict=True)]
        + [n]
    )
    return [(s, s + size, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def tile_grid(shape, tile_size: int, halo: int | None = None) -> list[Tile]:
    """The tiles of an image of ``shape`` ``(H, W, ...)``, row by row from the top left."""
    spec = TileSpec.make(tile_size, halo)
    h, w = int(shape[0]), int(shape[1])
    tiles = []
    for r0, r1, o0, o1 in _axis(h, spec.tile_size, spec.halo):
        for c0, c1, p0, p1 in _axis(w, spec.tile_size, spec.halo):
            tiles.append(
                Tile(len(tiles), slice(r0, r1), slice(c0, c1), slice(o0, o1), slice(p0, p1))
            )
    return tiles


class TiledImage:
    """An image read one tile at a time, converted with the whole image's intensity rule.

    When the rule needs the image's minimum and maximum (integers other than uint8,
    floats; no ``intensity_range``), they are found first by reading the image tile by
    tile; NaN/infinite values and constant images are refused as for untiled images.
    """

    def __init__(self, image, grid: list[Tile], intensity_range, what: str):
        image_hw(image, what)
        if not (hasattr(image, "shape") and hasattr(image, "dtype")):
            image = np.asarray(image)  # e.g. nested lists: not a large image
        self.image = image
        self.grid = grid
        self.intensity_range = intensity_range
        self.what = what
        dtype = np.dtype(image.dtype)
        self.range = None
        if intensity_range is None and dtype not in (np.uint8, np.bool_):
            self.range = self._min_max()

    def raw(self, tile: Tile) -> np.ndarray:
        return drop_alpha(np.asarray(self.image[tile.rows, tile.cols]))

    def _min_max(self):
        lo = hi = None
        for t in self.grid:
            part = drop_alpha(np.asarray(self.image[t.own_rows, t.own_cols]))
            if part.dtype.kind == "f" and not np.isfinite(part).all():
                raise InvalidInputError(
                    f"the {self.what} contains NaN or infinite values: replace them (e.g. with "
                    "numpy.nan_to_num) before segmenting"
                )
            a, b = part.min(), part.max()
            lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
        if lo == hi:
            raise InvalidInputError(
                f"the {self.what} is constant (every pixel is {lo}): there is nothing to segment"
            )
        return lo, hi

    def rgb(self, tile: Tile, raw: np.ndarray | None = None) -> np.ndarray:
        """The tile as ``float32`` RGB in [0, 1], as the whole image would be converted."""
        raw = self.raw(tile) if raw is None else raw
        lo, hi = self.range if self.range is not None else (None, None)
        return scale_to_unit(raw, lo, hi, self.intensity_range)

    def rule(self) -> str:
        """What the conversion depends on besides a tile's pixels (for cache keys)."""
        if self.range is None:
            return str(self.intensity_range)
        return f"image-range {self.range[0]!r}..{self.range[1]!r}"


def _upsample(low: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if low.shape == tuple(hw):
        return low
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None, None]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


class StitchedLogits(Mapping):
    """``{class: (H, W) logits}`` of a tiled image, stitched when a class is read.

    Holds per tile and class the tile's logits (SAM2's low-resolution map, or a map at the
    tile's size), or ``None`` where a tile has no result for a class (then
    :data:`BACKGROUND_LOGIT`). ``blocks()`` gives the result tile by tile.
    """

    def __init__(self, grid: list[Tile], shape, per_class: dict[int, list]):
        self.grid = grid
        self.shape = (int(shape[0]), int(shape[1]))
        self.per_class = per_class
        self._full: dict[int, np.ndarray] = {}

    def __getitem__(self, c) -> np.ndarray:
        if c not in self._full:
            if c not in self.per_class:
                raise KeyError(c)
            out = np.empty(self.shape, dtype=np.float32)
            for t in self.grid:
                out[t.own_rows, t.own_cols] = self.block(c, t)
            self._full[c] = out
        return self._full[c]

    def __iter__(self):
        return iter(sorted(self.per_class))

    def __len__(self) -> int:
        return len(self.per_class)

    def block(self, c: int, tile: Tile) -> np.ndarray:
        """Class ``c``'s logits on the own part of ``tile``."""
        low = self.per_class[c][tile.index]
        rows, cols = tile.own_in_tile
        if low is None:
            return np.full(
                (rows.stop - rows.start, cols.stop - cols.start), BACKGROUND_LOGIT, np.float32
            )
        return _upsample(low, tile.shape)[rows, cols]

    def blocks(self) -> Iterator[tuple[Tile, dict[int, np.ndarray]]]:
        for t in self.grid:
            yield t, {c: self.block(c, t) for c in self}

    def __repr__(self) -> str:
        return f"StitchedLogits({len(self.grid)} tiles, shape={self.shape}, classes={list(self)})"


def iter_blocks(prediction) -> Iterator[tuple[tuple[slice, slice], dict[int, np.ndarray]]]:
    """``((rows, cols), {class: logits})`` covering a prediction's image once: one block
    per tile for a tiled prediction (nothing of image size is made), one for the rest."""
    logits = prediction.logits
    if isinstance(logits, StitchedLogits):
        for t, block in logits.blocks():
            yield (t.own_rows, t.own_cols), block
    else:
        h, w = prediction.shape
        yield (slice(0, h), slice(0, w)), dict(logits)


def write_labels(prediction, out) -> None:
    """Write a prediction's fused class map into ``out`` (an ``(H, W)`` array, e.g. a
    ``numpy.memmap`` or a zarr array) block by block, at the prediction's threshold."""
    from napari_sansa.core.fusion import fuse_labels, sigmoid

    if tuple(out.shape) != tuple(prediction.shape):
        raise InvalidInputError(
            f"out has shape {tuple(out.shape)}, the prediction {tuple(prediction.shape)}"
        )
    for (rows, cols), block in iter_blocks(prediction):
        probs = {c: sigmoid(v) for c, v in block.items()}
        out[rows, cols] = fuse_labels(probs, prediction.threshold)


def mean_score(grid: list[Tile], scores: list[float | None]) -> float:
    """A class's score over tiles: the mean of the tiles' scores weighted by the area they
    own (tiles without a result left out)."""
    pairs = [(s, t.own_area) for t, s in zip(grid, scores, strict=True) if s is not None]
    total = sum(a for _, a in pairs)
    return float(sum(s * a for s, a in pairs) / total) if total else 0.0


def tiled_prediction(
    index,
    image,
    spec: TileSpec,
    decode,
    threshold=0.5,
    intensity_range=None,
    batch=1,
    cancelled=None,
):
    """One image segmented tile by tile and stitched into a :class:`Prediction`.

    ``decode(src, tiles)`` gets a :class:`TiledImage` and up to ``batch`` tiles and
    returns per tile ``{class: (logits, score)}`` (logits at any resolution: they are
    upsampled to the tile bilinearly when read). ``cancelled()`` is polled between
    batches of tiles: when it turns True, None is returned.
    """
    from napari_sansa.core.results import Prediction

    what = f"target {index}"
    hw = image_hw(image, what)
    grid = tile_grid(hw, spec.tile_size, spec.halo)
    src = TiledImage(image, grid, intensity_range, what)
    per_class: dict[int, list] = {}
    scores: dict[int, list] = {}
    for start in range(0, len(grid), batch):
        if cancelled is not None and cancelled():
            return None
        part = grid[start : start + batch]
        for tile, result in zip(part, decode(src, part), strict=True):
            for c, (low, score) in result.items():
                per_class.setdefault(c, [None] * len(grid))[tile.index] = low
                scores.setdefault(c, [None] * len(grid))[tile.index] = score
    mean = {c: mean_score(grid, scores[c]) for c in sorted(scores)}
    return Prediction(index, StitchedLogits(grid, hw, per_class), mean, threshold)
