"""Image sets on a real viewer (Xvfb): several image layers of different sizes, a folder
napari opens as one stack although its images differ in size, RGB and gray mixed."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from conftest import make_image

pytestmark = pytest.mark.gui

TIMEOUT = 180_000
SIZES = [(48, 64), (40, 56), (56, 40)]


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


def photos(rgb=(False, False, False)):
    return [make_image(20 + i, hw, rgb=c) for i, (hw, c) in enumerate(zip(SIZES, rgb, strict=True))]


def three_images(make_sansa, rgb=(False, False, False)):
    layers = [
        (img, {"name": f"photo{i}", "translate": (0, 100 * i)}, "image")
        for i, img in enumerate(photos(rgb))
    ]
    return make_sansa(*layers)


def test_three_images_of_different_sizes_each_get_their_own_output(make_sansa, qtbot):
    viewer, widget = three_images(make_sansa)
    chosen = widget.select_images(["photo0", "photo1", "photo2"])
    assert [layer.name for layer in chosen] == ["photo0", "photo1", "photo2"]
    # the widget's '+ labels' makes a layer of the chosen image's shape, remembering it
    widget.image.value = viewer.layers["photo1"]
    widget.other_images.value = [viewer.layers["photo0"], viewer.layers["photo2"]]
    paint = widget.new_labels_layer()
    assert paint.data.shape == SIZES[1]
    paint.data[10:30, 10:40] = 1
    assert paint in widget.prompt_layers.value
    active = viewer.layers.selection.active
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.status.value == "done: 3 frames"
    for name, hw in zip(["photo0", "photo1", "photo2"], SIZES, strict=True):
        out = viewer.layers[f"{name} [sansa]"]
        assert isinstance(out, Labels) and out.data.shape == hw
        np.testing.assert_allclose(out.translate, viewer.layers[name].translate)
    np.testing.assert_array_equal(viewer.layers["photo1 [sansa]"].data, paint.data)
    assert viewer.layers.selection.active is active  # Run leaves the active layer as it was
    assert set(widget.scores.kinds().values()) == {"reference", "predicted"}
    assert len(widget.plot.keys()) == 3
    # a row of another image jumps to it: its output becomes the active layer
    part = [im.name for im in widget.session.images].index("photo2")
    widget.go_to_frame((part, 0))
    assert viewer.layers.selection.active is viewer.layers["photo2 [sansa]"]


def test_points_on_one_of_several_images_belong_to_it(make_sansa, qtbot):
    viewer, widget = three_images(make_sansa)
    # no link to an image: its items lie on photo2 only (translated by 200 columns)
    clicks = viewer.add_points(np.array([[20.0, 220.0]]), name="clicks")
    widget.select_images(["photo0", "photo1", "photo2"])
    widget.prompt_layers.value = [clicks]
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.session.plan.parts[2].references[0].frame == 0
    assert widget.session.plan.targets == ((0, 0), (1, 0))


def test_a_prompt_layer_on_several_images_is_refused_by_name(make_sansa, notifications):
    layers = [(img, {"name": f"photo{i}"}, "image") for i, img in enumerate(photos())]
    viewer, widget = make_sansa(*layers)  # all at the origin: they overlap
    clicks = viewer.add_points(np.array([[5.0, 5.0]]), name="clicks")
    widget.select_images(["photo0", "photo1", "photo2"])
    widget.prompt_layers.value = [clicks]
    names = [layer.name for layer in viewer.layers]
    assert widget.run() is None
    message = notifications()[-1]
    assert "'clicks' fits several images" in message and "+ points" in message
    assert [layer.name for layer in viewer.layers] == names


def test_rgb_and_gray_images_in_one_set(make_sansa, qtbot):
    viewer, widget = three_images(make_sansa, rgb=(True, False, True))
    widget.select_images(["photo0", "photo1", "photo2"])
    paint = widget.new_labels_layer()  # for photo0, the RGB one: rows x cols
    assert paint.data.shape == SIZES[0]
    paint.data[5:20, 5:30] = 2
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.status.value == "done: 3 frames"
    assert viewer.layers["photo1 [sansa]"].data.shape == SIZES[1]
    assert viewer.layers["photo2 [sansa]"].data.shape == SIZES[2]


def test_sixteen_bit_and_eight_bit_images_are_each_scaled_by_their_contrast(make_sansa, qtbot):
    a, b = make_image(1, (40, 48), rgb=False), make_image(2, (44, 40), rgb=False)
    wide = a.astype(np.uint16) * 200
    viewer, widget = make_sansa(
        (wide, {"name": "wide", "contrast_limits": (0, 255 * 200)}, "image"),
        (b, {"name": "narrow", "translate": (0, 100)}, "image"),
    )
    widget.select_images(["wide", "narrow"])
    paint = widget.new_labels_layer()
    paint.data[5:20, 5:30] = 1
    assert widget.run() is not None, widget.status.value
    wait_done(qtbot, widget)
    assert widget.session.plan.shared_intensity_range()[0] is False
    assert viewer.layers["narrow [sansa]"].data.shape == (44, 40)


@pytest.fixture
def mixed_folder(tmp_path):
    from skimage.io import imsave

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(photos()):
        imsave(folder / f"p{i}.png", img, check_contrast=False)
    return folder


def test_a_folder_of_images_of_different_sizes_opened_as_a_stack(
    make_sansa, mixed_folder, notifications
):
    viewer, widget = make_sansa()
    (layer,) = viewer.open(str(mixed_folder), stack=True)
    # what napari makes of it: one lazy stack of the first image's size
    assert layer.data.shape == (3, *SIZES[0])
    paint = viewer.add_labels(np.zeros(layer.data.shape, np.uint8), name="paint")
    paint.data[0, 10:30, 10:40] = 1
    widget.select_images([layer.name])
    widget.prompt_layers.value = [paint]
    names = [lay.name for lay in viewer.layers]
    assert widget.run() is None
    message = notifications()[-1]
    assert "different sizes" in message and "p1.png is 40x56" in message
    assert "separate layers" in message and "broadcast" not in message
    assert [lay.name for lay in viewer.layers] == names  # no layer made
    assert not paint.data[1:].any()


def test_a_stack_whose_frame_turns_out_of_another_size_fails_clearly(
    make_sansa, qtbot, notifications
):
    import dask.array as da
    from dask import delayed

    imgs = photos()
    lazy = da.stack(
        [da.from_delayed(delayed(lambda x: x)(im), shape=SIZES[0], dtype=np.uint8) for im in imgs]
    )
    viewer, widget = make_sansa((lazy, {"name": "lazy"}, "image"))
    paint = viewer.add_labels(np.zeros((3, *SIZES[0]), np.uint8), name="paint")
    paint.data[0, 10:30, 10:40] = 1
    widget.prompt_layers.value = [paint]
    assert widget.run() is not None
    wait_done(qtbot, widget)
    status = widget.status.value
    assert "frame 1 of 'lazy' is 40x56 pixels" in status and "separate layers" in status
    assert "done" not in status


def test_a_folder_stack_with_a_file_that_is_no_image(make_sansa, tmp_path, notifications):
    from skimage.io import imsave

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        imsave(folder / f"f{i}.png", make_image(i, SIZES[0], rgb=False), check_contrast=False)
    viewer, widget = make_sansa()
    (layer,) = viewer.open(str(folder), stack=True)
    (folder / "f3.png").write_bytes(b"not a picture")  # broken after napari read the list
    paint = viewer.add_labels(np.zeros(layer.data.shape, np.uint8), name="paint")
    paint.data[0, 10:30, 10:40] = 1
    widget.prompt_layers.value = [paint]
    names = [lay.name for lay in viewer.layers]
    assert widget.run() is None
    message = notifications()[-1]
    assert "cannot be read as images (f3.png)" in message
    assert [lay.name for lay in viewer.layers] == names
    assert (folder / "f3.png").read_bytes() == b"not a picture"
