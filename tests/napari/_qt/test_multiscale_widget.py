"""A multiscale (pyramid) image labelled from the widget in a real viewer (Xvfb, issue 23):
the full resolution read by tiles gives what ``napari-sansa segment --tile-size`` gives for
the same image, in a multiscale Labels layer on the image; a lower level chosen under
'level' gives the core's labels of that level."""

from __future__ import annotations

import threading

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

import napari_sansa as ns
from conftest import cli_model_args, make_image

pytestmark = pytest.mark.gui

TIMEOUT = 240_000
SIZE, TILE = 256, 128
SCALE, TRANSLATE = (1.0, 0.5, 0.5), (0.0, 10.0, 20.0)


class Recording:
    """A level that records the size of each read made off the main thread (the run's)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.ndim, self.size = array.ndim, array.size
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        if threading.current_thread() is not threading.main_thread():
            self.reads.append(out.size)
        return out


def slide():
    """Two 256 x 256 frames (the reference, the target) and the mask painted on the first."""
    frames = np.stack([make_image(60 + i, (SIZE, SIZE), rgb=False) for i in range(2)])
    paint = np.zeros(frames.shape, np.uint8)
    paint[0, 40:120, 60:150] = 1
    paint[0, 160:220, 30:90] = 2
    return frames, paint


@pytest.mark.slow
def test_a_multiscale_image_is_labelled_into_a_multiscale_layer_as_the_cli_does(
    make_sansa, qtbot, weights, tmp_path, monkeypatch, model
):
    from napari_sansa.cli import main
    from napari_sansa.napari import outputs
    from napari_sansa.napari.geometry import labels_array

    frames, paint = slide()
    # the CLI: the target frame as a TIFF (read by windows), the reference as a pair
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "slide.tif", frames[1])
    iio.imwrite(tmp_path / "ref.png", frames[0])
    iio.imwrite(tmp_path / "ref_labels.png", paint[0])
    args = ["segment", str(tmp_path / "data"), "-r", str(tmp_path / "ref.png")]
    args += [str(tmp_path / "ref_labels.png"), "--out", str(tmp_path / "cli")]
    assert main([*args, "--tile-size", str(TILE), *cli_model_args(weights)]) == 0
    cli = tifffile.imread(tmp_path / "cli" / "slide.tif")

    # the widget: a 3-level pyramid (256, 128, 64) with a scale and a translate
    levels = [frames[:, :: 2**k, :: 2**k] for k in range(3)]
    full = Recording(levels[0])
    monkeypatch.setattr(outputs, "SINGLE_SCALE_MAX", TILE)  # 256 px: multiscale output
    place = {"scale": SCALE, "translate": TRANSLATE}
    viewer, widget = make_sansa(
        ([full, *levels[1:]], {"name": "slide", "multiscale": True, **place}, "image"),
        (paint, {"name": "paint", **place}, "labels"),
    )
    assert not widget.axes.level.native.isHidden() and widget.axes.level.value == 0
    assert [layer.name for layer in widget.prompt_layers.value] == ["paint"]
    widget.large.tile_size.value = TILE
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert widget.status.value.startswith("done"), widget.status.value
    out = viewer.layers["slide [sansa]"]
    assert out.multiscale
    assert [tuple(level.shape) for level in out.data] == [lv.shape for lv in levels]
    np.testing.assert_array_equal(out.scale, viewer.layers["slide"].scale)
    np.testing.assert_array_equal(out.translate, viewer.layers["slide"].translate)
    np.testing.assert_array_equal(labels_array(out)[1], cli)  # the CLI's labels, exactly
    np.testing.assert_array_equal(out.data[1][1], cli[::2, ::2])  # its pyramid
    assert full.reads and max(full.reads) <= TILE * TILE  # tiles: never a whole frame

    # level 1 chosen: the half-resolution frames, labelled as the core labels them there
    widget.axes.level.value = 1
    assert widget.axes.note.value  # the note follows the level's geometry
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    coarse = [la for la in viewer.layers if la.name.startswith("slide [sansa]") and la is not out]
    assert len(coarse) == 1 and labels_array(coarse[0]).shape == (2, 128, 128)
    np.testing.assert_array_equal(coarse[0].scale, np.multiply(SCALE, (1, 2, 2)))
    half = levels[1]
    masks = [ns.Mask(paint[0, ::2, ::2] == c, label=c) for c in (1, 2)]
    (pred,) = model.segment([ns.Reference(half[0], masks)], [half[1]], tile_size=TILE)
    np.testing.assert_array_equal(labels_array(coarse[0])[1], pred.labels)


def test_a_folder_run_from_a_multiscale_reference_labels_the_folder_as_the_cli_does(
    make_sansa, qtbot, weights, tmp_path
):
    """The Folder page with a multiscale (pyramid) layer as the reference: read at full
    resolution (the default level), its painted masks on those pixels: the folder's labels
    are those of ``napari-sansa segment -r`` with the same image saved as a PNG."""
    from napari_sansa.cli import main

    image = make_image(61, (96, 128), rgb=False)
    paint = np.zeros(image.shape, np.uint8)
    paint[20:50, 30:80] = 1
    paint[60:85, 10:50] = 2
    (tmp_path / "data").mkdir()
    iio.imwrite(tmp_path / "data" / "t.png", make_image(62, (96, 128), rgb=False))
    iio.imwrite(tmp_path / "ref.png", image)
    iio.imwrite(tmp_path / "ref_labels.png", paint)
    args = ["segment", str(tmp_path / "data"), "-r", str(tmp_path / "ref.png")]
    args += [str(tmp_path / "ref_labels.png"), "--out", str(tmp_path / "cli")]
    assert main([*args, *cli_model_args(weights)]) == 0

    place = {"scale": SCALE[1:], "translate": TRANSLATE[1:]}
    levels = [image[:: 2**k, :: 2**k] for k in range(3)]
    viewer, widget = make_sansa(
        (levels, {"name": "ref", "multiscale": True, **place}, "image"),
        (paint, {"name": "ref prompts", **place}, "labels"),
    )
    widget.select_images(["ref"])
    widget.prompt_layers.value = [viewer.layers["ref prompts"]]
    assert widget.axes.level.value == 0
    widget.select_folder(tmp_path / "data", tmp_path / "gui")
    assert widget.run() is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert widget.status.value.startswith("done: 1 image(s) labelled"), widget.status.value
    cli = tifffile.imread(tmp_path / "cli" / "t.tif")
    assert len(np.unique(cli)) > 1
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "gui" / "t.tif"), cli)
