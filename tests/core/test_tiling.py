"""Large images by tiles: the grid, prompts moved into tiles, stitching, reading by tiles.

The test model sees 256 px squares; tile sizes are scaled down with it (64-128 px).
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_sansa as ns
from conftest import make_image
from napari_sansa.core.tile_prompts import tile_prompts
from napari_sansa.core.tiling import StitchedLogits, TileSpec, tiled_prediction


def _covered(grid, shape):
    count = np.zeros(shape, int)
    for t in grid:
        count[t.own_rows, t.own_cols] += 1
    return count


@pytest.mark.parametrize(
    "shape, size, halo",
    [((100, 250), 64, 8), ((64, 64), 64, 0), ((300, 129), 128, 30), ((50, 500), 100, 49)],
)
def test_grid_own_parts_partition_the_image_away_from_tile_edges(shape, size, halo):
    grid = ns.tile_grid(shape, size, halo)
    assert np.all(_covered(grid, shape) == 1)
    for t in grid:
        assert t.shape == (min(size, shape[0]), min(size, shape[1]))
        assert t.rows.start >= 0 and t.rows.stop <= shape[0]
        assert t.cols.start >= 0 and t.cols.stop <= shape[1]
        rows, cols = t.own_in_tile
        # at least `halo` pixels from every tile edge that is not an image edge
        if t.rows.start > 0:
            assert rows.start >= halo
        if t.rows.stop < shape[0]:
            assert t.shape[0] - rows.stop >= halo
        if t.cols.start > 0:
            assert cols.start >= halo
        if t.cols.stop < shape[1]:
            assert t.shape[1] - cols.stop >= halo


def test_halo_zero_and_a_dividing_tile_size_give_the_grid_cells():
    grid = ns.tile_grid((128, 192), 64, halo=0)
    assert len(grid) == 6
    for i, t in enumerate(grid):
        r, c = divmod(i, 3)
        assert (t.rows, t.cols) == (slice(64 * r, 64 * r + 64), slice(64 * c, 64 * c + 64))
        assert (t.own_rows, t.own_cols) == (t.rows, t.cols)


def test_bad_tile_settings():
    with pytest.raises(ns.InvalidInputError, match="halo must be >= 0"):
        TileSpec.make(64, -1)
    with pytest.raises(ns.InvalidInputError, match="larger than 2 x halo"):
        TileSpec.make(64, 32)
    with pytest.raises(ns.InvalidInputError, match="whole number"):
        TileSpec.make(64.5, 2)
    with pytest.raises(ns.InvalidInputError, match="only with tile_size"):
        TileSpec.make(None, 8)
    assert TileSpec.make(None) is None
    assert TileSpec.make(256) == TileSpec(256, 32)  # default halo: an eighth of the tile


@pytest.mark.parametrize("size", [1, 16, 63, 0, -64])
def test_tile_size_below_the_minimum_is_refused_by_its_own_name(size):
    with pytest.raises(ns.InvalidInputError) as info:
        TileSpec.make(size)
    text = str(info.value)
    assert f"tile_size must be at least 64 pixels, got {size}" in text
    assert "64 x 64 grid of image features" in text  # why
    worded = info.value.worded(lambda option: "--" + option.replace("_", "-"))
    assert f"--tile-size must be at least 64 pixels, got {size}" in worded  # the CLI's words
    assert "halo" not in text  # the default halo (size // 8) is not what is wrong
    with pytest.raises(ns.InvalidInputError, match="at least 64 pixels"):
        ns.tile_grid((100, 100), size, 0)
    assert TileSpec.make(64) == TileSpec(64, 8)


def test_tile_size_is_checked_before_any_work(model, images, disk_mask, weights, tmp_path):
    from napari_sansa.dataset import ModelSource, segment_dataset

    ref = ns.Reference(images[0], [ns.Mask(disk_mask)])
    with pytest.raises(ns.InvalidInputError, match="at least 64 pixels, got 1"):
        model.segment_iter([ref], images[1:2], tile_size=1)  # raised before iterating
    with pytest.raises(ns.InvalidInputError, match="at least 64 pixels, got 1"):
        model.prepare_references([ref], tile_size=1)
    # segment_dataset: before the model (here: a file that does not exist) is looked at
    source = ModelSource(sam2_checkpoint=str(tmp_path / "missing.pt"), device="cpu")
    with pytest.raises(ns.InvalidInputError, match="at least 64 pixels, got -64"):
        segment_dataset(tmp_path, [ref], tmp_path / "out", model=source, tile_size=-64)
    assert not (tmp_path / "out").exists()


def test_bad_tile_settings_in_segment(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask)])
    with pytest.raises(ns.InvalidInputError, match="larger than 2 x halo"):
        model.segment([ref], images[1:2], tile_size=64, halo=32)
    with pytest.raises(ns.InvalidInputError, match="halo must be"):
        model.segment_iter([ref], images[1:2], tile_size=64, halo=-2)
    with pytest.raises(ns.InvalidInputError, match="independent mode only"):
        model.segment([ref], images[1:2], tile_size=64, mode="sequential")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_one_tile_covering_the_image_reproduces_the_untiled_result(model, images, disk_mask, dtype):
    scale = 1 if dtype == np.uint8 else 257
    ref = ns.Reference(
        images[0].astype(dtype) * scale,
        [ns.Mask(disk_mask, label=1), ns.Points([[70, 30]], label=2)],
    )
    targets = [images[1].astype(dtype) * scale, images[2][:80].astype(dtype) * scale]
    untiled = model.segment([ref], targets)
    for size in (128, 500):  # a tile exactly the image, and one larger than it
        tiled = model.segment([ref], targets, tile_size=size, halo=4)
        for a, b in zip(untiled, tiled, strict=True):
            assert isinstance(b.logits, StitchedLogits) and len(b.logits.grid) == 1
            for c in (1, 2):
                assert np.abs(a.logits[c] - b.logits[c]).max() <= 1e-5
                assert b.scores[c] == pytest.approx(a.scores[c], abs=1e-6)
            assert np.array_equal(a.labels, b.labels)


def test_with_halo_zero_each_tile_is_a_target(model, images, disk_mask):
    memory = model.prepare_references([ns.Reference(images[0], [ns.Mask(disk_mask)])])
    big = make_image(7, shape=(128, 192))
    grid = ns.tile_grid(big.shape, 64, 0)
    (tiled,) = model.segment(memory, [big], tile_size=64, halo=0)
    alone = model.segment(memory, [big[t.rows, t.cols] for t in grid])
    for t, p in zip(grid, alone, strict=True):
        assert np.abs(tiled.logits[1][t.rows, t.cols] - p.logits[1]).max() <= 1e-5
    # the score is the mean of the tiles' scores (equal areas here)
    assert tiled.scores[1] == pytest.approx(np.mean([p.scores[1] for p in alone]), abs=1e-6)


def _shifted(prompt, origin):
    return {
        ns.Points: lambda p: p.coords + origin,
        ns.Scribble: lambda p: p.path + origin,
        ns.Box: lambda p: np.reshape(p.box, (2, 2)) + origin,
    }[type(prompt)](prompt)


def test_prompts_near_a_tile_corner_land_at_the_same_image_position():
    image = make_image(3, shape=(128, 128))
    points = ns.Points([[62, 66], [66, 61], [70, 70]], label=1, positive=[True, True, False])
    box = ns.Box((50, 55, 80, 75), label=2)
    scribble = ns.Scribble([[60, 60], [68, 68]], label=3)
    ref = ns.Reference(image, [points, box, scribble])
    grid = ns.tile_grid(image.shape, 64, halo=0)  # four tiles meeting at (64, 64)
    carried = tile_prompts(ref, grid)
    assert [t.index for t, _ in carried] == [0, 1, 2, 3]
    seen_points, box_cover = [], np.zeros((128, 128), bool)
    scribble_pixels = set()
    for tile, prompts in carried:
        origin = np.array(tile.origin)
        for q in prompts:
            xy = _shifted(q, origin)
            if isinstance(q, ns.Points):
                seen_points += [tuple(v) for v in xy[q.positive]]
            elif isinstance(q, ns.Box):
                (r0, c0), (r1, c1) = xy
                box_cover[int(r0) : int(r1), int(c0) : int(c1)] = True
            else:
                scribble_pixels |= {tuple(v) for v in np.floor(xy + 0.5).astype(int)}
    # each positive click once, at its own image position
    assert sorted(seen_points) == sorted(map(tuple, points.coords[points.positive]))
    # the box, cut at the tile edges, covers the box exactly
    expect = np.zeros((128, 128), bool)
    expect[50:80, 55:75] = True
    assert np.array_equal(box_cover, expect)
    # the scribble crosses the corner: every pixel of its path is carried
    assert {(r, r) for r in range(60, 69)} <= scribble_pixels


def _holds(rows, cols, rc):
    return rows.start <= rc[0] < rows.stop and cols.start <= rc[1] < cols.stop


def test_a_prompt_near_a_corner_is_decoded_as_on_the_tile_alone(model):
    image = make_image(4, shape=(128, 128))
    ref = ns.Reference(image, [ns.Points([[66, 67]], label=1)])
    (tiled,) = model.prepare_references([ref], tile_size=64, halo=8).decoded
    grid = ns.tile_grid(image.shape, 64, 8)
    owner = next(t for t in grid if _holds(t.own_rows, t.own_cols, (66, 67)))
    r0, c0 = owner.origin
    alone = ns.Reference(image[owner.rows, owner.cols], [ns.Points([[66 - r0, 67 - c0]], label=1)])
    (expect,) = model.decode_references([alone])
    rows, cols = owner.own_in_tile
    got = tiled.logits[1][owner.own_rows, owner.own_cols]
    assert np.abs(got - expect.logits[1][rows, cols]).max() <= 1e-5
    assert tiled.shape == (128, 128)
    # tiles that carry no prompt are background in the decoded reference
    empty = [t for t in grid if not _holds(t.rows, t.cols, (66, 67))]
    assert empty and all((tiled.labels[t.own_rows, t.own_cols] == 0).all() for t in empty)


@pytest.mark.parametrize("seed", range(4))
def test_every_prompt_is_carried_by_some_tile(seed):
    """A prompt outside every tile is impossible by construction: any prompt anywhere,
    any grid, every part of it reaches a tile."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(140, 400, size=2)
    image = rng.integers(0, 255, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    for _ in range(3):
        r, c = rng.integers(0, h), rng.integers(0, w)
        mask[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5] = True
    clicks = np.c_[rng.uniform(-0.5, h - 0.5, 6), rng.uniform(-0.5, w - 0.5, 6)]
    r0, r1 = sorted(rng.uniform(0, h, 2))
    c0, c1 = sorted(rng.uniform(0, w, 2))
    prompts = [
        ns.Mask(mask, label=1),
        ns.Points(clicks, label=2),
        ns.Box((r0, c0, r1 + 1, c1 + 1), label=3),
    ]
    ref = ns.Reference(image, prompts)
    size = int(rng.integers(64, 140))
    grid = ns.tile_grid((h, w), size, int(rng.integers(0, (size - 1) // 2)))
    got_mask = np.zeros((h, w), bool)
    got_clicks = []
    for tile, carried in tile_prompts(ref, grid):
        for q in carried:
            if isinstance(q, ns.Mask):
                got_mask[tile.rows, tile.cols] |= q.mask
            elif isinstance(q, ns.Points):
                got_clicks += [tuple(v) for v in q.coords + tile.origin]
    assert np.array_equal(got_mask, mask)
    assert set(map(tuple, clicks)) <= set(got_clicks)
    boxes = [q for _, carried in tile_prompts(ref, grid) for q in carried if isinstance(q, ns.Box)]
    assert boxes


def _smooth_segmenter(sigma=2.0):
    """A local stand-in for the model: logits = smoothed intensity - 0.5 (its support is
    4 sigma, and like the model it sees nothing beyond the tile: zeros)."""
    from scipy import ndimage as ndi

    def decode(src, part):
        out = []
        for t in part:
            gray = src.rgb(t)[..., 0]
            out.append({1: (ndi.gaussian_filter(gray, sigma, mode="constant") - 0.5, 1.0)})
        return out

    return decode


def _straddling_disks(shape=(192, 192), edges=(64, 128)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for r in edges:
        for c in edges:  # a disk on every tile corner, and across every tile edge
            for cr, cc in ((r, c), (r, c - 32), (r - 32, c)):
                img[(yy - cr) ** 2 + (xx - cc) ** 2 < 14**2] = 1.0
    return img


def test_no_seam_along_tile_edges():
    image = _straddling_disks()
    decode = _smooth_segmenter()
    whole = tiled_prediction(0, image, TileSpec(192, 0), decode)
    tiled = tiled_prediction(0, image, TileSpec(96, 16), decode)
    assert len(tiled.logits.grid) == 9
    assert np.array_equal(tiled.labels, whole.labels)  # not one changed pixel, seams included
    # without a halo the tiles' edges show: the check above can fail
    seamed = tiled_prediction(0, image, TileSpec(64, 0), decode)
    changed = seamed.labels != whole.labels
    near = np.zeros(image.shape, bool)
    for e in (64, 128):
        near[e - 8 : e + 8, :] = near[:, e - 8 : e + 8] = True
    assert changed.any() and not (changed & ~near).any()  # a seam: lines along the edges


class _TileOnly:
    """An array that gives its pixels only by slices of at most ``limit`` pixels."""

    def __init__(self, data, limit):
        self.data, self.limit = data, limit
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, key):
        part = self.data[key]
        assert part.shape[0] * part.shape[1] <= self.limit, "read more than a tile"
        self.reads.append(part.shape)
        return part

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was read")


def test_large_images_are_read_tile_by_tile(model, images, disk_mask, tmp_path):
    import tifffile

    ref = ns.Reference(images[0], [ns.Mask(disk_mask)])
    big = make_image(9, shape=(128, 160)).astype(np.uint16) * 200
    lazy = _TileOnly(big, limit=64 * 64)
    memory = model.prepare_references([ref])
    (a,) = model.segment(memory, [lazy], tile_size=64, halo=8)
    (b,) = model.segment(memory, [big], tile_size=64, halo=8)
    assert lazy.reads and max(r[0] * r[1] for r in lazy.reads) <= 64 * 64
    assert np.array_equal(a.logits[1], b.logits[1])
    # the labels written block by block into a memory-mapped file are the labels
    tifffile.imwrite(tmp_path / "big.tif", big)
    mm = tifffile.memmap(tmp_path / "big.tif")
    (c,) = model.segment(memory, [mm], tile_size=64, halo=8)
    out = np.lib.format.open_memmap(tmp_path / "labels.npy", "w+", np.uint8, big.shape[:2])
    ns.write_labels(c, out)
    assert np.array_equal(np.asarray(out), b.labels)
    # a dask array is read by tiles the same way
    da = pytest.importorskip("dask.array")
    (d,) = model.segment(memory, [da.from_array(big, chunks=(32, 32, 3))], tile_size=64, halo=8)
    assert np.array_equal(d.logits[1], b.logits[1])
    with pytest.raises(ns.InvalidInputError, match="out has shape"):
        ns.write_labels(c, np.zeros(big.shape, np.uint8))


def test_a_constant_tile_in_a_large_image_is_fine(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask)])
    big = make_image(5, shape=(128, 128))
    big[:64, :64] = 7  # one whole tile of one value
    (p,) = model.segment([ref], [big], tile_size=64, halo=0)
    assert p.shape == (128, 128) and np.isfinite(p.logits[1]).all()
    with pytest.raises(ns.InvalidInputError, match="constant"):
        model.segment([ref], [np.full((128, 128), 3, np.uint16)], tile_size=64)
    nan = big.astype(np.float32)
    nan[100, 100] = np.nan
    with pytest.raises(ns.InvalidInputError, match="NaN"):
        model.segment([ref], [nan], tile_size=64)
    # any array-like works, as untiled: nested lists too
    (q,) = model.segment([ref], [big.tolist()], tile_size=64, halo=0)
    assert np.array_equal(q.logits[1], p.logits[1])


def test_tiled_references_and_instances_together(model, disk_mask):
    image = make_image(11, shape=(96, 192))
    mask = np.zeros((96, 192), bool)
    mask[30:70, 80:120] = True  # across the edge between the two tiles
    ref = ns.Reference(image, [ns.Mask(mask, label=1), ns.Box((5, 5, 30, 40), label=2)])
    preds = model.segment(
        [ref], [make_image(12, shape=(96, 192))], tile_size=96, halo=8, instances=True
    )
    (decoded,) = preds.references
    # the mask crossing the tile edge is taken whole: both tiles carry a part of it
    got = decoded.labels == 1
    assert (got & mask).sum() / (got | mask).sum() > 0.9
    assert got[:, :96].any() and got[:, 96:].any()
    assert decoded.scores[1] == 1.0 and decoded.classes == (1, 2)
    (p,) = preds
    assert p.objects.shape == (96, 192)
    assert len(p.object_table) == int(p.objects.max())


def test_a_tiled_image_stops_between_tiles_when_cancelled():
    image = _straddling_disks()
    decode = _smooth_segmenter()
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    assert tiled_prediction(0, image, TileSpec(96, 16), decode, cancelled=cancelled) is None
    assert len(calls) == 3  # two batches of tiles ran, the third was not started


def test_an_error_in_a_reference_tile_names_the_tile(model):
    image = make_image(13, shape=(64, 128))
    image[:, 64:] = 9  # the right tile is constant
    ref = ns.Reference(image, [ns.Points([[30, 100]], label=1)])
    with pytest.raises(
        ns.InvalidInputError, match=r"tile at rows 0-64, cols 64-128 of reference 0 .*is 9\)"
    ):
        model.prepare_references([ref], tile_size=64, halo=0)
