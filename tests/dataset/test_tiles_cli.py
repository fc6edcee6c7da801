"""``napari-sansa segment --tile-size N --halo N``: the API's tiles from the command line."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

import napari_sansa as ns
from conftest import cli_model_args, make_image
from napari_sansa.cli import main


def test_cli_tiles_match_the_api(weights, model, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    big = make_image(30, shape=(96, 192))
    iio.imwrite(tmp_path / "data" / "big.png", big)
    stack = np.stack([make_image(31, shape=(96, 192)), make_image(32, shape=(96, 192))])
    tifffile.imwrite(tmp_path / "data" / "stack.tif", stack)
    ref_image = make_image(0, shape=(96, 192))
    iio.imwrite(tmp_path / "ref.png", ref_image)
    lab = np.zeros((96, 192), np.uint8)
    lab[20:60, 70:130] = 1  # across the edge between the reference's two tiles
    iio.imwrite(tmp_path / "ref_labels.png", lab)
    args = [
        "segment",
        str(tmp_path / "data"),
        "--reference",
        str(tmp_path / "ref.png"),
        str(tmp_path / "ref_labels.png"),
        "--out",
        str(tmp_path / "out"),
        *cli_model_args(weights),
    ]
    assert main([*args, "--tile-size", "96", "--halo", "8"]) == 0
    ref = ns.Reference(ref_image, [ns.Mask(lab == 1, label=1)])
    expect = model.segment([ref], [big, *stack], tile_size=96, halo=8)
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "big.tif"), expect[0].labels)
    got = tifffile.imread(tmp_path / "out" / "stack.tif")
    assert np.array_equal(got, np.stack([p.labels for p in expect[1:]]))
    # the tiles are part of the run's settings: other tiles are another run
    assert main([*args, "--tile-size", "64", "--halo", "8"]) == 2
    assert "overwrite" in capsys.readouterr().err.lower()
    # bad settings are refused before anything runs
    assert main([*args, "--halo", "8"]) == 2
    assert main([*args, "--tile-size", "64", "--halo", "32", "--overwrite"]) == 2
    assert main([*args, "--tile-size", "96", "--mode", "sequential", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "only with --tile-size" in err and "2 x --halo" in err and "independent mode only" in err


@pytest.mark.parametrize(
    "options, words",
    [
        (["--tile-size", "1"], ["--tile-size must be at least 64 pixels, got 1"]),
        (["--tile-size", "16"], ["--tile-size must be at least 64 pixels, got 16", "grid"]),
        (["--tile-size", "-64"], ["--tile-size must be at least 64 pixels, got -64"]),
        (["--tile-size", "64", "--halo", "-3"], ["--halo must be >= 0", "got -3"]),
        (["--tile-size", "64", "--halo", "32"], ["2 x --halo"]),
        (["--halo", "8"], ["--halo must be given only with --tile-size"]),
        (["--tile-size", "64", "--mode", "sequential"], ["unless --mode is independent"]),
    ],
)
def test_cli_bad_tiles_are_refused_before_anything_is_read(
    tmp_path, monkeypatch, capsys, options, words
):
    """The references and the weights named do not exist, and loading a model fails the
    test: the tile settings are refused first."""
    from napari_sansa.dataset import models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "cached_model", no_model)
    args = [
        "segment",
        str(tmp_path / "data"),
        "--reference",
        str(tmp_path / "missing.png"),
        str(tmp_path / "missing_labels.png"),
        "--out",
        str(tmp_path / "out"),
        "--sam2-checkpoint",
        str(tmp_path / "missing.pt"),
        *options,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert "missing" not in err and "Traceback" not in err
    if "--halo" not in options:
        assert "halo" not in err  # about the tile size itself
    assert not (tmp_path / "out").exists()
