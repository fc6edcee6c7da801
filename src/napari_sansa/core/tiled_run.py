"""A model run on tiles: references tiled into references, targets tiled and stitched.

Called by :class:`~napari_sansa.core.model.SansaModel` when ``tile_size`` is given; the
tile grid, the reading of tiles and the stitching are in :mod:`~napari_sansa.core.tiling`,
the prompts moved into tiles in :mod:`~napari_sansa.core.tile_prompts`.
"""

from __future__ import annotations

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.tile_prompts import tile_prompts
from napari_sansa.core.tiling import (
    StitchedLogits,
    Tile,
    TiledImage,
    TileSpec,
    tile_grid,
    tiled_prediction,
)

__all__ = ["prepare_tiled_references", "run_tiled_targets"]


def _where(tile: Tile, what: str) -> str:
    return (
        f"the tile at rows {tile.rows.start}-{tile.rows.stop}, cols {tile.cols.start}-"
        f"{tile.cols.stop} of {what}"
    )


def prepare_tiled_references(model, refs, s, spec: TileSpec):
    """Reference memory from the tiles of references larger than a tile (the tiles that
    carry prompts; smaller references as they are). ``decoded`` holds one prediction per
    given reference, stitched over its tiles (background where no tile carries a class)."""
    import dataclasses
    import re

    from napari_sansa.core.preprocess import mask_to_input
    from napari_sansa.core.prompts import Reference
    from napari_sansa.core.references import prepare_memory
    from napari_sansa.core.results import Prediction, ReferenceMemory

    def keeps(mask):
        return bool(mask_to_input(mask, model.image_size, s.input_size, "cpu").any())

    flat, names, plans = [], [], []
    for i, ref in enumerate(refs):
        h, w = ref.shape
        if h <= spec.tile_size and w <= spec.tile_size:
            plans.append((i, None, [(len(flat), None)]))
            names.append(f"reference {i}")
            flat.append(ref)
            continue
        grid = tile_grid((h, w), spec.tile_size, spec.halo)
        src = TiledImage(ref.image, grid, s.intensity_range, f"reference image {i}")
        members = []
        for tile, prompts in tile_prompts(ref, grid, keeps):
            raw = src.raw(tile)
            # as given where the tile alone converts as the image would (uint8, bool, a
            # given intensity_range); otherwise converted with the whole image's range
            image = raw if src.range is None else src.rgb(tile, raw)
            members.append((len(flat), tile))
            names.append(_where(tile, f"reference {i}"))
            flat.append(Reference(image, prompts))
        plans.append((i, grid, members))
    try:
        memory = prepare_memory(model, flat, s)
    except InvalidInputError as exc:

        def name(m):
            k = int(m.group(1))
            return names[k] if k < len(names) else m.group(0)

        message = re.sub(r"(?:the )?reference(?: image)? (\d+)", name, str(exc), count=1)
        raise InvalidInputError(message) from None
    if memory is None:  # cancelled
        return None
    decoded = []
    for i, grid, members in plans:
        if grid is None:
            decoded.append(dataclasses.replace(memory.decoded[members[0][0]], index=i))
            continue
        preds = [(memory.decoded[k], tile) for k, tile in members]
        classes = sorted({c for p, _ in preds for c in p.classes})
        per_class = {c: [None] * len(grid) for c in classes}
        scores = {c: [] for c in classes}
        for p, tile in preds:
            for c in p.classes:
                per_class[c][tile.index] = p.logits[c]
                scores[c].append(p.scores[c])
        stitched = StitchedLogits(grid, refs[i].shape, per_class)
        mean = {c: float(np.mean(v)) for c, v in scores.items()}
        decoded.append(Prediction(i, stitched, mean, s.threshold, is_reference=True))
    return ReferenceMemory(
        memory.groups,
        decoded,
        identity=memory.identity,
        input_size=memory.input_size,
        intensity_range=memory.intensity_range,
        n_references=len(refs),
    )


def run_tiled_targets(model, targets, groups, s, spec: TileSpec):
    """Each target cut into tiles, every tile decoded against the references' memory
    (independent mode), the results stitched: one :class:`Prediction` per target."""
    batch = s.batch_size or (1 if model.device.type == "cpu" else 8)

    def decode(src, part):
        return _decode_tiles(model, src, part, groups, s)

    for i, image in enumerate(targets):
        pred = tiled_prediction(
            i, image, spec, decode, s.threshold, s.intensity_range, batch, s.cancelled
        )
        if pred is None:  # cancelled
            return
        yield pred


def _decode_tiles(model, src: TiledImage, part: list[Tile], groups, s) -> list[dict]:
    """Encode the tiles ``part`` as one batch and decode them for every class."""
    from napari_sansa.core.errors import DeviceMemoryError
    from napari_sansa.core.runners import decode_pairs, is_out_of_memory, release_memory

    loaded = [model.features.load_tile(src, t, s) for t in part]
    results: list[dict] = [{} for _ in part]
    try:
        with model.features.compute():
            feats = model.features.encode(loaded, s)
            for g in groups:
                rows = [j for j in range(len(part)) for _ in g.classes]
                cls = [ci for _ in part for ci in range(len(g.classes))]
                out = decode_pairs(model, g, feats, rows, cls)
                low = out.low_res[:, 0].float().cpu().numpy()
                score = out.score.float().cpu().numpy()
                for p, (j, ci) in enumerate(zip(rows, cls, strict=True)):
                    results[j][g.classes[ci]] = (low[p], float(score[p]))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        del exc
        release_memory(model.device)
        raise DeviceMemoryError(
            f"{len(part)} tile(s) of {part[0].shape[0]}x{part[0].shape[1]} pixels of "
            f"{src.what} do not fit in the {model.device} memory: use a smaller tile_size "
            "or batch_size"
        ) from None
    # objects are refined on the tiles with foreground
    model.features.keep_tiles(src.what, part, [x.key for x in loaded], results, s.threshold)
    return results
