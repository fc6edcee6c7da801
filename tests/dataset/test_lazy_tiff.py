"""Large TIFF targets read tile by tile with ``--tile-size`` (issue 13), and their labels
written block by block."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference

import napari_sansa as ns
from conftest import load_test_model, make_image
from napari_sansa.cli import main
from napari_sansa.dataset import io
from napari_sansa.dataset.io import TiffWindows, lazy_tiff, read_target
from napari_sansa.dataset.references import load_reference_pair


def _gray16(seed=3, shape=(96, 128)):
    return (make_image(seed, shape, rgb=False).astype(np.uint16) * 200 + 1000).astype(np.uint16)


@pytest.mark.parametrize(
    ("data", "options"),
    [
        (_gray16(), {}),
        (_gray16(), {"byteorder": ">"}),
        (make_image(4), {"photometric": "rgb"}),
    ],
    ids=["uint16", "big-endian", "rgb"],
)
def test_an_uncompressed_tiff_is_read_by_windows(tmp_path, monkeypatch, data, options):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, data, **options)
    kind, img = read_target(path, lazy=True)
    assert kind == "image" and isinstance(img, TiffWindows)
    assert img.shape == data.shape and img.dtype.newbyteorder("=") == data.dtype
    read = []
    pread = os.pread
    monkeypatch.setattr(io.os, "pread", lambda fd, n, off: read.append(n) or pread(fd, n, off))
    window = img[10:30, 40:90]
    assert window.dtype == data.dtype and window.dtype.isnative
    np.testing.assert_array_equal(window, data[10:30, 40:90])
    row = data[0].nbytes
    assert read == [20 * row]  # only the rows of the window were read
    np.testing.assert_array_equal(np.asarray(img), data)
    # not lazy: the array itself
    kind, whole = read_target(path)
    assert isinstance(whole, np.ndarray)
    np.testing.assert_array_equal(whole, data)
    img.close()


def test_a_compressed_tiled_tiff_is_read_through_zarr(tmp_path):
    pytest.importorskip("zarr")
    data = _gray16(5, (200, 300))
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, data, compression="zlib", tile=(64, 64))
    img = lazy_tiff(path)
    assert img is not None and not isinstance(img, (np.ndarray, TiffWindows))
    assert tuple(img.shape) == data.shape
    np.testing.assert_array_equal(img[70:150, 10:250], data[70:150, 10:250])


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, _gray16())
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 128 * 2 * 10)  # the last 10 rows are gone
    img = lazy_tiff(path)
    np.testing.assert_array_equal(img[0:10, :], _gray16()[0:10])
    with pytest.raises(ns.InvalidInputError, match="is truncated"):
        img[80:96, :]


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiled_cli_labels_of_a_tiff_read_by_tiles_are_the_apis(
    weights, tmp_path, monkeypatch, compression
):
    if compression:
        pytest.importorskip("zarr")
    write_reference(tmp_path)
    (tmp_path / "data").mkdir()
    data = _gray16()
    tifffile.imwrite(tmp_path / "data" / "big.tif", data, compression=compression)
    tiles = ["--tile-size", "80", "--halo", "8"]  # 2x2 tiles
    with monkeypatch.context() as m:  # the target is never read whole

        def whole(self, i):
            raise AssertionError("a frame was read whole")

        m.setattr(io.TiffStack, "__getitem__", whole)
        assert main(segment_args(weights, tmp_path, *tiles)) == 0
    out = tmp_path / "out"
    labels = tifffile.imread(out / "big.tif")
    with tifffile.TiffFile(out / "big.tif") as tif:
        assert tif.pages[0].is_tiled  # written block by block
    model = load_test_model(weights)
    lab = iio.imread(tmp_path / "ref_labels.png")
    ref = ns.Reference(iio.imread(tmp_path / "ref.png"), [ns.Mask(lab == c, c) for c in (1, 2)])
    (pred,) = model.segment([ref], [data], tile_size=80, halo=8)
    np.testing.assert_array_equal(labels, pred.labels)
    (row,) = read_csv(out / "scores.csv")
    for c in (1, 2):
        assert int(row[f"area_{c}"]) == int((pred.labels == c).sum())
    # a resume sees it finished
    before = (out / "big.tif").stat().st_mtime_ns
    assert main(segment_args(weights, tmp_path, *tiles)) == 0
    assert (out / "big.tif").stat().st_mtime_ns == before


def test_label_tiles_cover_any_grid(model, images, disk_mask):
    """Block-by-block writing gives the stitched labels for grids whose bands are
    smaller and larger than a TIFF tile."""
    from napari_sansa.dataset import writing

    ref = ns.Reference(images[0], [ns.Mask(disk_mask, 1)])
    image = np.concatenate([images[1], images[2]], axis=1)  # 96 x 256
    (pred,) = model.segment([ref], [image], tile_size=64, halo=4)  # 2 x 5 tiles, bands of 48
    for n in (16, 32, 96, 112):
        areas = {1: 0}
        tiles = list(writing._label_tiles(pred, areas, n))
        rows, cols = -(-96 // n), -(-256 // n)
        assert len(tiles) == rows * cols
        full = np.zeros((rows * n, cols * n), tiles[0].dtype)
        for k, t in enumerate(tiles):
            r, c = divmod(k, cols)
            full[r * n : (r + 1) * n, c * n : (c + 1) * n] = t
        np.testing.assert_array_equal(full[:96, :256], pred.labels)
        assert not full[96:].any() and not full[:, 256:].any()
        assert areas == {1: int((pred.labels == 1).sum())}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_constant_tiff_read_by_tiles_fails_as_when_read_whole(weights, tmp_path, dtype):
    write_reference(tmp_path)
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "flat.tif", np.full((96, 128), 7, dtype))
    tifffile.imwrite(tmp_path / "data" / "ok.tif", _gray16())
    assert main(segment_args(weights, tmp_path, "--tile-size", "64")) == 1
    rows = {Path(r["target"]).name: r for r in read_csv(tmp_path / "out" / "scores.csv")}
    assert rows["flat.tif"]["status"] == "failed"
    assert "is constant" in rows["flat.tif"]["message"]
    assert rows["ok.tif"]["status"] == "ok"


# -- references read by windows (issue 13) ------------------------------------------------


def _reference_tiff(path, dtype=np.uint8, **options):
    data = make_image(0, (96, 128), rgb=dtype == np.uint8)
    if dtype != np.uint8:
        data = (data.astype(dtype) * 200 + 1000).astype(dtype)
    tifffile.imwrite(path, data, **options)
    labels = np.zeros((96, 128), np.uint8)
    labels[10:40, 10:50] = 1  # in the top-left tile alone (its own part: rows 0-48,
    labels[20:44, 52:62] = 2  # cols 0-64, with tile_size 64 and halo 0)
    iio.imwrite(path.with_name("ref_labels.png"), labels)
    return data, path.with_name("ref_labels.png")


@pytest.mark.parametrize(
    ("dtype", "options"),
    [
        (np.uint8, {"photometric": "rgb"}),
        (np.uint16, {}),
        (np.uint16, {"byteorder": ">"}),
        (np.uint16, {"compression": "zlib", "tile": (32, 32)}),
    ],
    ids=["rgb", "uint16", "big-endian", "zlib"],
)
def test_a_reference_read_by_windows_has_the_digest_of_the_reference_read_whole(
    tmp_path, monkeypatch, dtype, options
):
    from napari_sansa.dataset import references as refs_module

    if "compression" in options:
        pytest.importorskip("zarr")
    _, labels = _reference_tiff(tmp_path / "ref.tif", dtype, **options)
    whole = load_reference_pair(tmp_path / "ref.tif", labels)
    lazy = load_reference_pair(tmp_path / "ref.tif", labels, lazy=True)
    assert isinstance(whole.image, np.ndarray) and not isinstance(lazy.image, np.ndarray)
    monkeypatch.setattr(refs_module, "DIGEST_BLOCK", 5000)  # several blocks of rows
    assert len(list(refs_module._pixel_blocks(lazy.image))) > 1
    digest = refs_module.references_digest
    assert digest([lazy]) == digest([whole])
    assert digest([lazy]) != digest([load_reference_pair(tmp_path / "ref_labels.png", labels)])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_tiled_run_reads_only_the_reference_tiles_that_carry_prompts(
    model, tmp_path, monkeypatch, dtype
):
    data, labels = _reference_tiff(tmp_path / "ref.tif", dtype)
    whole = load_reference_pair(tmp_path / "ref.tif", labels)
    lazy = load_reference_pair(tmp_path / "ref.tif", labels, lazy=True)
    assert isinstance(lazy.image, TiffWindows)
    target = np.concatenate([make_image(11), make_image(12)], axis=1)
    if dtype != np.uint8:
        target = (target[..., 0].astype(dtype) * 200 + 1000).astype(dtype)
    read = []
    getitem = TiffWindows.__getitem__

    def spy(self, key):
        read.append(key)
        return getitem(self, key)

    monkeypatch.setattr(TiffWindows, "__getitem__", spy)
    (expected,) = model.segment([whole], [target], tile_size=64, halo=0)
    assert read == []
    (got,) = model.segment([lazy], [target], tile_size=64, halo=0)
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert read, "the reference was not read by windows"
    assert all(len(k) == 2 and all(isinstance(s, slice) for s in k) for k in read)
    if dtype == np.uint8:  # no intensity range to find: only the prompts' tile is read
        assert {(k[0].start, k[0].stop, k[1].start, k[1].stop) for k in read} == {(0, 64, 0, 64)}
    else:  # the range is found tile by tile: no window is larger than a tile
        assert all(k[0].stop - k[0].start <= 64 and k[1].stop - k[1].start <= 64 for k in read), (
            read
        )
        assert any(k[0].stop > 64 or k[1].stop > 64 for k in read)


def test_tiled_cli_reads_a_tiff_reference_by_windows(weights, tmp_path, monkeypatch):
    data, labels = _reference_tiff(tmp_path / "ref.tif")
    (tmp_path / "data").mkdir()
    iio.imwrite(tmp_path / "data" / "t.png", np.concatenate([make_image(11)] * 2, axis=1))
    args = segment_args(weights, tmp_path, "--tile-size", "64", "--halo", "0")
    args[args.index("-r") + 1] = str(tmp_path / "ref.tif")
    read = []
    getitem = TiffWindows.__getitem__
    with monkeypatch.context() as m:

        def whole(self, i):
            raise AssertionError("a frame was read whole")

        def spy(self, key):
            read.append(key)
            return getitem(self, key)

        m.setattr(io.TiffStack, "__getitem__", whole)
        m.setattr(TiffWindows, "__getitem__", spy)
        assert main(args) == 0
    assert read  # by windows (the digest's blocks of rows and the prompts' tile)
    model = load_test_model(weights)
    ref = load_reference_pair(tmp_path / "ref.tif", labels)
    (pred,) = model.segment([ref], [iio.imread(tmp_path / "data" / "t.png")], tile_size=64, halo=0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "t.tif"), pred.labels)


def test_a_prompt_file_reference_read_by_windows_reads_the_tile_of_its_box(
    model, tmp_path, monkeypatch
):
    import json

    from napari_sansa.dataset.references import load_prompt_file

    _reference_tiff(tmp_path / "ref.tif")
    entry = {"image": "ref.tif", "boxes": [{"box": [60, 70, 90, 120], "label": 1}]}
    (tmp_path / "p.json").write_text(json.dumps({"references": [entry]}))
    (whole,) = load_prompt_file(tmp_path / "p.json")
    (lazy,) = load_prompt_file(tmp_path / "p.json", lazy=True)
    assert isinstance(lazy.image, TiffWindows)
    read = []
    getitem = TiffWindows.__getitem__
    monkeypatch.setattr(TiffWindows, "__getitem__", lambda s, k: read.append(k) or getitem(s, k))
    target = make_image(13)
    (expected,) = model.segment([whole], [target], tile_size=64, halo=0)
    (got,) = model.segment([lazy], [target], tile_size=64, halo=0)
    np.testing.assert_array_equal(got.labels, expected.labels)
    # the box lies in the own part of the bottom-right tile alone
    assert {(k[0].start, k[0].stop, k[1].start, k[1].stop) for k in read} == {(32, 96, 64, 128)}
