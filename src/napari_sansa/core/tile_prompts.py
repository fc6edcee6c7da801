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

Each prompt class gives what a tile gets of it (``clip``, in
:mod:`napari_sansa.core.prompts`); this module gathers them per tile.
"""

from __future__ import annotations

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.prompts import Reference

__all__ = ["tile_prompts"]


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
            for q in p.clip(tile, hw):
                if not q.sparse and keeps_mask is not None and not keeps_mask(q.mask):
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
