"""Saving labels: the napari writer contribution (TIFF stack) and per-frame files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sansa.napari.writer import write_frames, write_labels_tiff


def labels(n=3, h=20, w=30, dtype=np.uint8):
    data = np.zeros((n, h, w), dtype)
    data[0, 2:5, 3:9] = 1
    data[2, 10:15, 1:4] = 2
    return data


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_tiff_stack_round_trip(tmp_path, dtype):
    data = labels(dtype=dtype)
    (path,) = write_labels_tiff(str(tmp_path / "out.tif"), data, {"name": "cells [sansa]"})
    back = tifffile.imread(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, data)


def test_tiff_writer_adds_the_extension_and_takes_multiscale_data(tmp_path):
    data = labels()
    (path,) = write_labels_tiff(str(tmp_path / "out"), [data, data[:, ::2, ::2]], {})
    assert path.endswith("out.tif")
    np.testing.assert_array_equal(tifffile.imread(path), data)


@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_one_file_per_frame(tmp_path, fmt):
    import imageio.v3 as iio

    data = labels()
    paths = write_frames(tmp_path / "frames", data, fmt, prefix="cells [sansa]")
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        f"cells__sansa__{i:04d}.{fmt}" for i in range(3)
    ]
    for i, p in enumerate(paths):
        back = tifffile.imread(p) if fmt == "tif" else iio.imread(p)
        np.testing.assert_array_equal(back, data[i])


def test_frames_of_a_4d_stack_are_named_by_their_index(tmp_path):
    data = np.zeros((2, 3, 8, 8), np.uint16)
    data[1, 2, 3, 3] = 300
    paths = write_frames(tmp_path, data, "png", prefix="x")
    assert len(paths) == 6 and paths[-1].endswith("x_0001_0002.png")
    import imageio.v3 as iio

    assert iio.imread(paths[-1])[3, 3] == 300


def test_frames_refuse_what_png_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="up to 65535"):
        write_frames(tmp_path, np.full((1, 4, 4), 70000, np.int32), "png")
    with pytest.raises(ValueError, match="unknown format"):
        write_frames(tmp_path, labels(), "jpg")
    assert not list(tmp_path.iterdir())
