"""Axes and channels of TIFF stacks: read from their metadata or given (--axes), the
channels that make a frame (--channels), and the bad inputs around them."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import cli_model_args, make_image
from napari_sansa.cli import main
from napari_sansa.core.channels import channel_image, check_channels, describe_channels
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset import load_prompt_file, load_reference_pair
from napari_sansa.dataset.io import TiffStack, read_frame_image
from napari_sansa.napari.axes import frame_image

H, W = 48, 64


def _data(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 60000, (*shape, H, W), dtype=np.uint16)


# -- axes from the metadata ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("writer", "axes", "frame_axes"),
    [
        ("imagej", "TZCYX", "TZ"),
        ("ome", "TZCYX", "TZ"),
        ("shaped", "TZCYX", "TZ"),
        ("imagej", "TCYX", "T"),
        ("imagej", "ZCYX", "Z"),
        ("shaped", "TZYX", "TZ"),
    ],
)
def test_axes_come_from_the_metadata(tmp_path, writer, axes, frame_axes):
    sizes = {"T": 3, "Z": 2, "C": 2}
    data = _data([sizes[a] for a in axes[:-2]])
    path = tmp_path / "s.tif"
    if writer == "imagej":
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    elif writer == "ome":
        tifffile.imwrite(path, data, ome=True, metadata={"axes": axes})
    else:
        tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": axes})
    with TiffStack(path) as stack:
        assert stack.axes == axes and stack.frame_axes == frame_axes
        assert stack.frame_sizes == tuple(sizes[a] for a in frame_axes)
        assert len(stack) == int(np.prod(stack.frame_sizes)) and stack.frame_shape == (H, W)
        assert stack.label_axes == frame_axes + "YX"
        c = axes.find("C")
        for i in (0, len(stack) - 1):
            at = list(stack.index(i))
            if c >= 0:
                at.insert(c, 0)  # the default: the first channel, as gray
                assert stack.channels == (0,)
            np.testing.assert_array_equal(stack[i], data[tuple(at)])


def test_one_axis_of_unknown_meaning_is_frames_as_before(tmp_path):
    data = _data([5])
    tifffile.imwrite(tmp_path / "q.tif", data, photometric="minisblack")
    with TiffStack(tmp_path / "q.tif") as stack:
        assert stack.recorded_axes == "QYX" and stack.frame_axes == "Q" and len(stack) == 5
        np.testing.assert_array_equal(stack[3], data[3])


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 2)])
def test_a_4d_or_5d_tiff_without_axes_is_refused_naming_axes(tmp_path, shape):
    tifffile.imwrite(tmp_path / "u.tif", _data(shape), photometric="minisblack")
    with pytest.raises(InvalidInputError) as info:
        TiffStack(tmp_path / "u.tif")
    text = str(info.value)
    assert "u.tif" in text and "--axes" in text and "axes=" in text
    assert f"{len(shape)} axes before its rows and columns" in text


def test_axes_given_for_a_file_that_records_none(tmp_path):
    data = _data([3, 2])
    tifffile.imwrite(tmp_path / "u.tif", data, photometric="minisblack")
    with TiffStack(tmp_path / "u.tif", axes="tcyx", channels=(1,)) as stack:
        assert stack.axes == "TCYX" and stack.frame_axes == "T" and stack.channels == (1,)
        np.testing.assert_array_equal(stack[2], data[2, 1])
    with TiffStack(tmp_path / "u.tif", axes="TZYX") as stack:
        assert stack.frame_sizes == (3, 2) and stack.index(3) == (1, 1)
        np.testing.assert_array_equal(stack[3], data[1, 1])
    # a plain image among the stacks keeps its own axes
    tifffile.imwrite(tmp_path / "one.tif", data[0, 0])
    with TiffStack(tmp_path / "one.tif", axes="TCYX", channels=(1,)) as stack:
        assert stack.axes == "YX" and len(stack) == 1
        np.testing.assert_array_equal(stack[0], data[0, 0])


@pytest.mark.parametrize(
    ("axes", "words"),
    [
        ("TCY", "give 4 different letters"),
        ("TTYX", "give 4 different letters"),
        ("TCXY", "must keep them there"),
        ("YCTX", "must keep them there"),
    ],
)
def test_axes_that_do_not_fit_the_file_are_refused(tmp_path, axes, words):
    tifffile.imwrite(tmp_path / "u.tif", _data([3, 2]), photometric="minisblack")
    with pytest.raises(InvalidInputError) as info:
        TiffStack(tmp_path / "u.tif", axes=axes)
    assert words in str(info.value) and "u.tif" in str(info.value)


# -- channels -----------------------------------------------------------------------------
def test_channels_make_gray_or_rgb_frames_by_the_widgets_rule(tmp_path):
    data = _data([3, 4])
    tifffile.imwrite(tmp_path / "c.tif", data, imagej=True, metadata={"axes": "TCYX"})
    with TiffStack(tmp_path / "c.tif", channels=(2, 0, 3)) as stack:
        frame = stack[1]
        assert frame.shape == (H, W, 3)
        np.testing.assert_array_equal(frame, np.stack([data[1, 2], data[1, 0], data[1, 3]], -1))
    with TiffStack(tmp_path / "c.tif", channels=(3, 1)) as stack:
        frame = stack[2]
        np.testing.assert_array_equal(frame[..., :2], np.stack([data[2, 3], data[2, 1]], -1))
        assert not frame[..., 2].any()  # a missing blue is zeros
    # the widget's rule is the same function
    geometry = type("G", (), {"channels": (3, 1)})()
    np.testing.assert_array_equal(frame_image(data[2], geometry), channel_image(data[2], (3, 1)))
    assert describe_channels((0,)) == "channel 0 as gray"
    assert describe_channels((2, 0)) == "channels 2 as red, 0 as green"


@pytest.mark.parametrize("channels", [(4,), (0, 1, 2, 3), ()])
def test_a_channel_out_of_range_is_refused_naming_the_file(tmp_path, channels):
    tifffile.imwrite(tmp_path / "c.tif", _data([3, 4]), imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(InvalidInputError) as info:
        TiffStack(tmp_path / "c.tif", channels=channels)
    text = str(info.value)
    assert "c.tif" in text and "channels 0..3" in text and "--channels" in text
    with pytest.raises(InvalidInputError):
        check_channels(("a",), 4, "x")


def test_channels_of_a_stack_without_a_channel_axis_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", _data([3]), imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(InvalidInputError) as info:
        TiffStack(tmp_path / "t.tif", channels=(1,))
    text = str(info.value)
    assert "t.tif" in text and "has no channel axis" in text and "--axes" in text


def test_a_long_declared_channel_axis_is_not_taken_without_axes(tmp_path):
    """A channel axis that is not where it is declared: 20 'channels' are rather frames."""
    data = _data([2, 20])
    tifffile.imwrite(tmp_path / "c.tif", data, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(InvalidInputError) as info:
        TiffStack(tmp_path / "c.tif")
    text = str(info.value)
    assert "c.tif" in text and "20 long" in text and "--axes TZYX" in text
    with TiffStack(tmp_path / "c.tif", axes="TZYX") as stack:
        assert len(stack) == 40


# -- references with channels -------------------------------------------------------------
def _labels(path):
    lab = np.zeros((H, W), np.uint8)
    lab[10:30, 10:40] = 1
    iio.imwrite(path, lab)
    return path


def test_a_reference_with_channels_gets_the_targets_mapping(tmp_path):
    data = _data([3])  # (C, H, W), recorded without axes: QYX
    tifffile.imwrite(tmp_path / "ref.tif", data, photometric="minisblack")
    labels = _labels(tmp_path / "lab.png")
    with pytest.raises(InvalidInputError) as info:
        load_reference_pair(tmp_path / "ref.tif", labels)
    text = str(info.value)
    assert "ref.tif holds 3 frames" in text and "--axes CYX" in text
    # the targets' --axes TCYX: a reference of one frame takes its last letters (CYX)
    ref = load_reference_pair(tmp_path / "ref.tif", labels, axes="TCYX", channels=(2, 0))
    np.testing.assert_array_equal(ref.image[..., 0], data[2])
    np.testing.assert_array_equal(ref.image[..., 1], data[0])
    ref = load_reference_pair(tmp_path / "ref.tif", labels, axes="CYX")
    np.testing.assert_array_equal(ref.image, data[0])
    # a plain image keeps its own axes whatever the targets' are
    iio.imwrite(tmp_path / "rgb.tif", make_image(1, shape=(H, W)))
    assert read_frame_image(tmp_path / "rgb.tif", "TCYX").shape == (H, W, 3)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"references": [{"image": "ref.tif", "labels": "lab.png"}]}))
    (ref,) = load_prompt_file(prompts, axes="CYX", channels=(1,))
    np.testing.assert_array_equal(ref.image, data[1])


# -- the command line ---------------------------------------------------------------------
def _gray_reference(root):
    iio.imwrite(root / "ref.png", make_image(0, shape=(H, W), rgb=False))
    return ["-r", str(root / "ref.png"), str(_labels(root / "ref_labels.png"))]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--axes", "T1YX"], "--axes must be one letter per axis"),
        (["--axes", "TC"], "with Y and X"),
        (["--channels", "a"], "--channels must be one channel index"),
        (["--channels", "0,1,2,3"], "up to three"),
        (
            ["--sequential-axis", "Z"],
            "--sequential-axis must be given only when --mode is sequential",
        ),
    ],
)
def test_bad_axes_channels_or_sequential_axis_are_usage_errors(
    weights, tmp_path, capsys, extra, words
):
    tifffile.imwrite(tmp_path / "s.tif", _data([3]), photometric="minisblack")
    args = ["segment", str(tmp_path / "s.tif"), *_gray_reference(tmp_path), "--out"]
    assert main([*args, str(tmp_path / "out"), *cli_model_args(weights), *extra]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_bad_stacks_by_name_and_labels_the_others(weights, tmp_path):
    """No declared frame axes (4D), channels out of range, gray channels for colour
    references: each a failed row naming the file and what to change."""
    from dataset_files import read_csv

    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "undeclared.tif", _data([3, 2]), photometric="minisblack")
    tifffile.imwrite(data / "tc.tif", _data([2, 2]), imagej=True, metadata={"axes": "TCYX"})
    tifffile.imwrite(data / "ok.tif", _data([2]), imagej=True, metadata={"axes": "TYX"})
    ref = _gray_reference(tmp_path)
    out = tmp_path / "out"
    base = ["segment", str(data), *ref, "--out", str(out), *cli_model_args(weights)]
    assert main([*base, "--channels", "3"]) == 1
    rows = {r["target"].rsplit("/", 1)[-1]: r for r in read_csv(out / "scores.csv")}
    assert rows["undeclared.tif"]["status"] == "failed"
    assert "--axes" in rows["undeclared.tif"]["message"]
    assert "channels 0..1" in rows["tc.tif"]["message"]
    assert "has no channel axis" in rows["ok.tif"]["message"]  # --channels for a TYX stack

    # RGB references and gray frames (the default channel) do not mix: said by name
    iio.imwrite(tmp_path / "rgb.png", make_image(0, shape=(H, W)))
    colour = ["-r", str(tmp_path / "rgb.png"), str(tmp_path / "ref_labels.png")]
    target = ["segment", str(data / "tc.tif"), *colour, *cli_model_args(weights)]
    assert main([*target, "--out", str(tmp_path / "o2")]) == 1
    (row,) = read_csv(tmp_path / "o2" / "scores.csv")
    assert row["status"] == "failed" and "tc.tif" in row["message"]
    assert "channel 0 as gray" in row["message"] and "--channels (e.g. 0,1,2)" in row["message"]
    assert main([*target, "--out", str(tmp_path / "o3"), "--channels", "1,0"]) == 0
    assert tifffile.imread(tmp_path / "o3" / "tc.tif").shape == (2, H, W)


def test_pages_written_one_at_a_time_take_axes_too(tmp_path):
    data = _data([4])
    with tifffile.TiffWriter(tmp_path / "sep.tif") as tw:
        for f in data:
            tw.write(f)
    with TiffStack(tmp_path / "sep.tif") as stack:
        assert stack.recorded_axes == "IYX" and len(stack) == 4
    with TiffStack(tmp_path / "sep.tif", axes="CYX", channels=(3, 1)) as stack:
        assert len(stack) == 1
        np.testing.assert_array_equal(stack[0][..., 0], data[3])


def test_references_of_both_kinds_are_said(caplog):
    from napari_sansa.core.prompts import Mask, Reference
    from napari_sansa.dataset.stacks import reference_colour

    mask = Mask(np.ones((H, W), bool))
    gray = Reference(make_image(0, shape=(H, W), rgb=False), [mask])
    rgb = Reference(make_image(1, shape=(H, W)), [mask])
    assert reference_colour([gray, gray]) is False and reference_colour([rgb]) is True
    assert not caplog.records
    assert reference_colour([gray, rgb]) is None
    assert "mix colour (RGB) and gray images (1 of 2 are colour)" in caplog.text
