"""Objects and tiles in the widget (issue 13), on a real viewer with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

import napari_sansa as ns
from conftest import make_image
from napari_sansa.napari.objects_output import FEATURE_COLUMNS, split_frame

pytestmark = pytest.mark.gui

N, H, W = 4, 48, 64
TIMEOUT = 180_000


def stack():
    return np.stack([make_image(50 + i, (H, W), rgb=False) for i in range(N)])


def paint():
    data = np.zeros((N, H, W), np.uint8)
    data[0, 5:15, 5:20] = 1
    data[0, 25:40, 8:22] = 1  # a second object of class 1
    data[0, 10:30, 40:58] = 2
    return data


def open_objects(make_sansa):
    viewer, widget = make_sansa(
        (stack(), {"name": "cells"}, "image"),
        (paint(), {"name": "paint"}, "labels"),
    )
    widget.large.instances.value = True
    widget.large.min_size.value = 4
    return viewer, widget


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)


def expected_objects(model, images, labels, options):
    refs = [ns.Reference(images[0], [ns.Mask(labels[0] == c, label=c) for c in (1, 2)])]
    preds = model.segment(refs, list(images[1:]), instances=options)
    return ns.stack_objects([split_frame(labels[0], options), *preds])


def test_the_object_layer_numbers_the_stack_like_the_core(make_sansa, qtbot, model):
    viewer, widget = open_objects(make_sansa)
    run(qtbot, widget)
    layer = viewer.layers["cells [sansa objects]"]
    assert isinstance(layer, Labels) and layer.data.shape == (N, H, W)
    features = layer.features
    assert tuple(features.columns) == FEATURE_COLUMNS
    ids = features["object"].to_numpy()
    assert len(set(ids)) == len(ids)  # unique within the stack
    assert (features["index"].to_numpy() == ids).all()
    assert set(np.unique(layer.data)) - {0} == set(ids)
    # frame 0 is the painted reference: its three objects, as painted
    first = features[features["frame"] == 0]
    assert sorted(first["class"]) == [1, 1, 2]
    assert sorted(first["area"]) == sorted([150, 210, 360])
    # the same as the core's objects of the same run, numbered in frame order
    options = ns.ObjectOptions(min_size=4)
    objects, table = expected_objects(model, stack(), paint(), options)
    np.testing.assert_array_equal(layer.data, objects)
    for c in ("frame", "object", "class", "area", "bbox_min_row", "bbox_max_col"):
        np.testing.assert_array_equal(features[c].to_numpy(), table[c])
    np.testing.assert_allclose(features["centroid_row"], table["centroid_row"])
    # per-frame counts per class in the results
    counts = widget.object_counts.counts()
    assert sorted(counts) == list(range(N))
    for f in range(N):
        rows = features[features["frame"] == f]
        assert counts[f] == {int(c): int((rows["class"] == c).sum()) for c in set(rows["class"])}
    assert counts[0] == {1: 2, 2: 1}
    assert not widget.object_counts.isHidden()  # shown once a frame has counts
    # a re-run gives the same ids; an edited output frame gives its own objects
    out = viewer.layers["cells [sansa]"]
    edited = np.array(out.data[2])
    edited[30:46, 2:30] = 1
    out.data[2] = edited
    run(qtbot, widget)
    mine, _ = split_frame(edited, options)
    again = viewer.layers["cells [sansa objects]"]
    assert again is layer
    np.testing.assert_array_equal(layer.data[:2], objects[:2])  # frames before: same ids
    frame2 = layer.data[2]
    np.testing.assert_array_equal(frame2 > 0, mine > 0)
    ids = layer.features["object"].to_numpy()
    assert len(set(ids)) == len(ids) and set(np.unique(layer.data)) - {0} == set(ids)


def test_a_frame_without_foreground_has_no_objects(make_sansa, qtbot):
    viewer, widget = open_objects(make_sansa)
    run(qtbot, widget)
    out = viewer.layers["cells [sansa]"]
    out.data[1] = 0  # the person erased frame 1: kept as it is, with no foreground
    run(qtbot, widget)
    assert widget.session.kept == (1,)
    features = viewer.layers["cells [sansa objects]"].features
    assert 1 not in set(features["frame"])
    assert not np.asarray(viewer.layers["cells [sansa objects]"].data[1]).any()
    assert widget.object_counts.counts()[1] == {}
    assert widget.object_counts.counts()[0] == {1: 2, 2: 1}


@pytest.mark.slow
def test_tiles_in_the_widget_give_the_cores_tiled_result(make_sansa, qtbot, model):
    # the painted frame and one target, twice the size: 6 tiles of 64 each (tiles are 64
    # pixels at least); each tile is an encoding, in the widget's run and in the core's
    images, labels = (a[:2].repeat(2, axis=1).repeat(2, axis=2) for a in (stack(), paint()))
    viewer, widget = make_sansa(
        (images, {"name": "cells"}, "image"),
        (labels, {"name": "paint"}, "labels"),
    )
    widget.large.tile_size.value = 64
    widget.large.halo.value = 8
    options = widget.run_settings().segment
    assert options.tile_size == 64 and options.halo == 8
    run(qtbot, widget)
    refs = [ns.Reference(images[0], [ns.Mask(labels[0] == c, label=c) for c in (1, 2)])]
    expected = model.segment(refs, list(images[1:]), tile_size=64, halo=8)
    out = viewer.layers["cells [sansa]"]
    for i, pred in enumerate(expected, start=1):
        np.testing.assert_array_equal(out.data[i], pred.labels)
    # halo left at auto: tile_size // 8
    widget.large.halo.value = -1
    assert widget.run_settings().segment.halo == 64 // 8


@pytest.mark.parametrize(
    ("tile", "halo", "mode", "message"),
    [
        (64, 32, "independent", "leaves nothing between two halos"),
        (16, -1, "independent", "must be at least 64 pixels"),
        (64, -1, "sequential", "tiles work in the independent mode only"),
    ],
)
def test_bad_tile_settings_give_a_clear_message(
    make_sansa, notifications, tile, halo, mode, message
):
    viewer, widget = make_sansa(
        (stack(), {"name": "cells"}, "image"),
        (paint(), {"name": "paint"}, "labels"),
    )
    widget.large.tile_size.value = tile
    widget.large.halo.value = halo
    widget.mode.value = mode
    assert widget.run() is None
    assert message in notifications()[-1]
    # worded with the widget's controls (issue 19: the error says which option)
    assert notifications()[-1].startswith("'tile size (0: off)' must be"), notifications()[-1]
    assert "tile_size" not in notifications()[-1] and "--" not in notifications()[-1]
    assert "cells [sansa]" not in [layer.name for layer in viewer.layers]


@pytest.mark.slow
def test_a_z_stack_gets_one_3d_objects_layer_with_its_features(make_sansa, qtbot):
    from napari_sansa.napari.objects_output import FEATURE_COLUMNS_3D

    painted = np.zeros((N, H, W), np.uint8)
    painted[0, 5:15, 5:20] = 1
    painted[0, 10:30, 40:58] = 2
    viewer, widget = make_sansa(
        (stack(), {"name": "nuclei", "axis_labels": ("z", "y", "x"), "scale": (3, 1, 1)},
         "image"),
        (painted, {"name": "paint", "axis_labels": ("z", "y", "x"), "scale": (3, 1, 1)},
         "labels"),
    )  # fmt: skip
    widget.large.instances.value = True
    widget.large.min_size.value = 0
    run(qtbot, widget)
    out = np.asarray(viewer.layers["nuclei [sansa]"].data)
    layer = viewer.layers["nuclei [sansa objects]"]
    # the run's labels split in 3D with the layer's scale as the voxel size
    expected = ns.split_objects(out, min_size=0, spacing=(3, 1, 1))
    np.testing.assert_array_equal(layer.data, expected)
    features = layer.features
    assert tuple(features.columns) == FEATURE_COLUMNS_3D
    table = ns.object_table(expected, out, spacing=(3, 1, 1))
    for c in ("object", "class", "volume", "bbox_min_z", "bbox_max_z", "bbox_max_col"):
        np.testing.assert_array_equal(features[c].to_numpy(), table[c])
    np.testing.assert_allclose(features["centroid_z"], table["centroid_z"])
    assert (features["physical_volume"] == features["volume"] * 3).all()
    assert (features["frame"] == 0).all()  # one volume
    # an object that spans planes has one id in each of them
    assert (features["bbox_max_z"] - features["bbox_min_z"] > 1).any()
    # objects per plane, on request: what the widget gave before 3D objects
    widget.large.per_plane.value = True
    run(qtbot, widget)
    assert "area" in layer.features.columns and "volume" not in layer.features.columns
    planes = [split_frame(out[z], ns.ObjectOptions(min_size=0))[0] for z in range(N)]
    np.testing.assert_array_equal(layer.data > 0, np.stack(planes) > 0)
