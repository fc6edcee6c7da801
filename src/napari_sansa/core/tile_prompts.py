"""A reference's prompts moved into its tiles' coordinates.

A tile carries a prompt when the tile's *own* part (see :mod:`napari_sansa.core.tiling`)
holds some of it. The own parts partition the image, so every prompt is carried by at
least one tile: a prompt outside every tile cannot happen. A carried prompt is given
to the tile as far as it lies inside the tile's whole window (halo included), shifted
to the tile's coordinates:

* a mask: cropped to the window (a tile whose crop vanishes on the model's input grid
  is left out; if every crop of a class vanishes, the usual "mask disappears" error);
* a box: clipped to the window;
* points: a tile carries them when its own part holds a positive click; it gets every
  click of that prompt inside its window, negative ones included (a negative click in
  a tile that carries no positive one of its class has nothing to correct and is not
  used there);
* a scribble: sampled along its path (half a pixel apart), cut into the runs that lie
  inside the window, one scribble per run.
"""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.preprocess import densify_path
from napari_sansa.core.prompts import Box, Mask, Points, Reference, Scribble

__all__ = ["tile_prompts"]


def _pixel(coords: np.ndarray, n: int) -> np.ndarray:
    """The pixel index of coordinates (pixel centres at integers), clamped to the image."""
    return np.clip(np.floor(coords + 0.5), 0, n - 1).astype(np.int64)


def _owned(rc: np.ndarray, tile, hw) -> np.ndarray:
    r, c = _pixel(rc[:, 0], hw[0]), _pixel(rc[:, 1], hw[1])
    return (
        (r >= tile.own_rows.start)
        & (r < tile.own_rows.stop)
        & (c >= tile.own_cols.start)
        & (c < tile.own_cols.stop)
    )


def _inside(rc: np.ndarray, tile) -> np.ndarray:
    """Coordinates inside the tile's window, [start - 0.5, stop - 0.5) on each axis."""
    return (
        (rc[:, 0] >= tile.rows.start - 0.5)
        & (rc[:, 0] < tile.rows.stop - 0.5)
        & (rc[:, 1] >= tile.cols.start - 0.5)
        & (rc[:, 1] < tile.cols.stop - 0.5)
    )


def _runs(flags: np.ndarray) -> list[slice]:
    """Slices of the runs of True in a 1D boolean array."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _clip(prompt, tile, hw) -> list:
    """What ``tile`` gets of one prompt (empty when its own part holds none of it)."""
    r0, c0 = tile.origin
    shift = np.array([r0, c0], dtype=np.float64)
    if isinstance(prompt, Mask):
        if not prompt.mask[tile.own_rows, tile.own_cols].any():
            return []
        return [Mask(prompt.mask[tile.rows, tile.cols], prompt.label)]
    if isinstance(prompt, Box):
        b0, b1, b2, b3 = prompt.box
        own = tile.own_rows, tile.own_cols
        if min(b2, own[0].stop) <= max(b0, own[0].start) or min(b3, own[1].stop) <= max(
            b1, own[1].start
        ):
            return []
        clipped = (
            max(b0, tile.rows.start) - r0,
            max(b1, tile.cols.start) - c0,
            min(b2, tile.rows.stop) - r0,
            min(b3, tile.cols.stop) - c0,
        )
        return [Box(clipped, prompt.label)]
    if isinstance(prompt, Points):
        if not (_owned(prompt.coords, tile, hw) & prompt.positive).any():
            return []
        keep = _inside(prompt.coords, tile)
        return [Points(prompt.coords[keep] - shift, prompt.label, prompt.positive[keep])]
    if isinstance(prompt, Scribble):
        path = densify_path(prompt.path, spacing=0.5)
        if not _owned(path, tile, hw).any():
            return []
        return [Scribble(path[run] - shift, prompt.label) for run in _runs(_inside(path, tile))]
    raise TypeError(f"not a prompt: {prompt!r}")


def tile_prompts(reference: Reference, grid, keeps_mask=None) -> list[tuple[object, list]]:
    """``[(tile, prompts in tile coordinates)]`` for the tiles of ``grid`` that carry a
    prompt of ``reference``, in grid order.

    ``keeps_mask(mask) -> bool`` says whether a cropped mask survives the resize to the
    model's input; crops that do not are left out, unless that leaves a class with
    nothing (then :class:`InvalidInputError`).
    """
    hw = reference.shape
    out = []
    dropped: set[int] = set()
    for tile in grid:
        prompts = []
        for p in reference.prompts:
            for q in _clip(p, tile, hw):
                if isinstance(q, Mask) and keeps_mask is not None and not keeps_mask(q.mask):
                    dropped.add(q.label)
                    continue
                prompts.append(q)
        if prompts:
            out.append((tile, prompts))
    kept = {q.label for _, prompts in out for q in prompts}
    for label in sorted(dropped - kept):
        raise InvalidInputError(
            f"the mask of class {label} disappears in every tile when resized to the model's "
            "input: paint a larger area, or use a smaller tile_size"
        )
    return out
