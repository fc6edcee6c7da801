"""napari's multiscale (pyramid) image layers as the image to label (issue 23), without Qt:
prompts drawn on them land on the right pixels of the level a run labels, a Labels layer
painted on one (or a multiscale Labels layer) gives masks, the frames are read by windows,
the output is a multiscale Labels layer on the image, and levels that are no pyramid are
refused with a message (nothing made). The run in a real viewer: tests/napari/_qt/
test_multiscale_widget.py."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from napari.components import ViewerModel

from napari_sansa.napari import outputs
from napari_sansa.napari.geometry import (
    FrameWindows,
    PromptError,
    fit_problem,
    labels_array,
    set_level,
)
from napari_sansa.napari.layers import prompts_from_layers
from napari_sansa.napari.plan import make_plan

SCALE, TRANSLATE = (1.0, 0.5, 0.5), (0.0, 10.0, 20.0)


def pyramid(n=2, size=256, levels=3, seed=0):
    r = np.random.default_rng(seed)
    base = r.integers(0, 255, (n, size, size), dtype=np.uint8)
    return [base[:, :: 2**k, :: 2**k] for k in range(levels)]


def multiscale_viewer(levels=None, lazy=True):
    viewer = ViewerModel()
    levels = pyramid() if levels is None else levels
    data = [da.from_array(level, chunks=(1, 64, 64)) for level in levels] if lazy else levels
    image = viewer.add_image(data, multiscale=True, name="slide", scale=SCALE, translate=TRANSLATE)
    return viewer, image, levels


def world(row, col, frame=0):
    """A point of the full resolution's pixels in the world (where a click lands)."""
    return [frame, TRANSLATE[1] + SCALE[1] * row, TRANSLATE[2] + SCALE[2] * col]


def test_clicks_and_boxes_land_on_the_labelled_levels_pixels():
    viewer, image, _ = multiscale_viewer()
    points = viewer.add_points([world(100, 50)], name="clicks")  # in world coordinates
    shapes = viewer.add_shapes(
        [np.array([world(40, 60), world(40, 140), world(100, 140), world(100, 60)])],
        shape_type="rectangle",
        name="boxes",
        features={"label": [2]},
    )
    (ref,) = prompts_from_layers(image, [points, shapes])
    clicks = next(p for p in ref.prompts if p.label == 1)
    box = next(p for p in ref.prompts if p.label == 2)
    np.testing.assert_allclose(clicks.coords, [[100, 50]])
    np.testing.assert_allclose(box.box, [40, 60, 100, 140])
    set_level(image, 1)  # the same prompts, at the half-resolution level's pixels
    (ref,) = prompts_from_layers(image, [points, shapes])
    clicks = next(p for p in ref.prompts if p.label == 1)
    box = next(p for p in ref.prompts if p.label == 2)
    np.testing.assert_allclose(clicks.coords, [[50, 25]])
    np.testing.assert_allclose(box.box, [20, 30, 50, 70])


def test_a_labels_layer_painted_on_the_image_gives_masks_at_every_level():
    viewer, image, levels = multiscale_viewer()
    paint = np.zeros(levels[0].shape, np.uint8)
    paint[0, 40:101, 60:141] = 1
    layer = viewer.add_labels(paint, name="paint", scale=SCALE, translate=TRANSLATE)
    (ref,) = prompts_from_layers(image, [layer])
    np.testing.assert_array_equal(ref.masks()[1], paint[0] == 1)
    set_level(image, 2)  # sampled where napari shows level 2's pixels: every 4th
    assert fit_problem(image, layer) is None
    (ref,) = prompts_from_layers(image, [layer])
    np.testing.assert_array_equal(ref.masks()[1], paint[0, ::4, ::4] == 1)
    # a multiscale Labels layer (an OME-Zarr's labels group) is read at its full resolution
    set_level(image, 0)
    ms = viewer.add_labels(
        [paint, paint[:, ::2, ::2]], multiscale=True, name="zarr labels",
        scale=SCALE, translate=TRANSLATE,
    )  # fmt: skip
    assert fit_problem(image, ms) is None
    (ref,) = prompts_from_layers(image, [ms])
    np.testing.assert_array_equal(ref.masks()[1], paint[0] == 1)
    # a layer on neither grid says which shapes fit
    wrong = viewer.add_labels(np.zeros((2, 100, 100), np.uint8), name="wrong")
    set_level(image, 1)
    problem = fit_problem(image, wrong)
    assert "(2, 128, 128)" in problem and "(2, 256, 256) with the image's scale" in problem


def test_frames_of_a_multiscale_image_are_read_by_windows():
    reads = []

    class Recording:
        """A level that records the size of every read."""

        def __init__(self, array):
            self.array, self.shape, self.dtype = array, array.shape, array.dtype
            self.ndim, self.size = array.ndim, array.size

        def __getitem__(self, key):
            out = np.asarray(self.array[key])
            reads.append(out.size)
            return out

    levels = pyramid()
    viewer, image, _ = multiscale_viewer([Recording(levels[0]), *levels[1:]], lazy=False)
    paint = viewer.add_labels(np.zeros(levels[0].shape, np.uint8), scale=SCALE, translate=TRANSLATE)
    paint.data[0, 5:20, 5:20] = 1
    plan = make_plan(image, [paint])
    frame = plan.stack.select(plan.targets)[0]
    assert isinstance(frame, FrameWindows) and frame.shape == (256, 256)
    reads.clear()
    np.testing.assert_array_equal(frame[32:96, 64:192], levels[0][1, 32:96, 64:192])
    assert reads == [64 * 128]  # that window, not the frame
    np.testing.assert_array_equal(np.asarray(frame), levels[0][1])


def test_the_output_is_a_multiscale_labels_layer_on_the_image(monkeypatch, tmp_path):
    viewer, image, levels = multiscale_viewer()
    paint = viewer.add_labels(np.zeros(levels[0].shape, np.uint8), scale=SCALE, translate=TRANSLATE)
    paint.data[0, 5:20, 5:20] = 1
    plan = make_plan(image, [paint])
    small = outputs.prepare_output(viewer, image, plan)  # 256 px: one array, paintable
    assert not small.multiscale and small.data.shape == (2, 256, 256)
    viewer.layers.remove(small)
    monkeypatch.setattr(outputs, "SINGLE_SCALE_MAX", 128)
    out = outputs.prepare_output(viewer, image, plan)
    assert out.multiscale and out.name == "slide [sansa]"
    assert [tuple(level.shape) for level in out.data] == [lv.shape for lv in levels]
    np.testing.assert_array_equal(out.scale, image.scale)
    np.testing.assert_array_equal(out.translate, image.translate)
    np.testing.assert_array_equal(out.downsample_factors, image.downsample_factors)
    base = labels_array(out)
    base[1, 100:140, 60:100] = 3  # as a run writes a frame: every level shows it
    np.testing.assert_array_equal(out.data[1], base[:, ::2, ::2])
    np.testing.assert_array_equal(out.data[2], base[:, ::4, ::4])
    assert outputs.find_output(viewer, image) is out  # a re-run writes into it
    # saved (File > Save, napari-sansa's TIFF writer) at its full resolution
    import tifffile

    from napari_sansa.napari.writer import write_labels_tiff

    (path,) = write_labels_tiff(str(tmp_path / "out"), out.data, {})
    np.testing.assert_array_equal(tifffile.imread(path), base)
    # labelled at level 1: the output lies on level 1's pixels (twice the image's scale)
    set_level(image, 1)
    plan = make_plan(image, [paint])
    monkeypatch.setattr(outputs, "SINGLE_SCALE_MAX", 64)
    coarse = outputs.prepare_output(viewer, image, plan)
    assert coarse is not out and coarse.multiscale
    # named for its level (napari's own renaming made it "slide [sansa] [1]", and a
    # re-run at level 1 did not find it: a third layer each time, hand edits left behind)
    assert coarse.name == "slide [sansa] (level 1)"
    assert outputs.find_output(viewer, image) is coarse
    assert outputs.prepare_output(viewer, image, plan) is coarse
    set_level(image, 0)
    assert outputs.find_output(viewer, image) is out
    assert [tuple(level.shape) for level in coarse.data] == [(2, 128, 128), (2, 64, 64)]
    np.testing.assert_array_equal(coarse.scale, np.array(SCALE) * [1, 2, 2])
    np.testing.assert_array_equal(coarse.translate, image.translate)


@pytest.mark.parametrize(
    ("shapes", "says"),
    [
        ([(64, 64), (32, 20)], "does not keep the 64x64 image's aspect ratio"),
        ([(64, 64), (32, 32), (40, 40)], "level 2 is larger than level 1 (rows)"),
    ],
)
def test_levels_that_are_no_pyramid_are_refused_and_nothing_is_made(shapes, says):
    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    image = viewer.add_image([np.zeros(s, np.uint8) for s in shapes], multiscale=True, name="x")
    paint = viewer.add_labels(np.zeros(shapes[0], np.uint8), name="paint")
    paint.data[5:10, 5:10] = 1
    with pytest.raises(PromptError, match="not a pyramid of one image") as info:
        make_plan(image, [paint])
    assert says in str(info.value)
    session = SansaSession(viewer)
    messages = []
    session.status.connect(messages.append)
    assert session.run(image, [paint], None) is None
    assert says in messages[-1]
    assert [layer.name for layer in viewer.layers] == ["x", "paint"]


def test_a_fix_click_writes_into_a_multiscale_output_and_every_level_shows_it(monkeypatch):
    """napari edits no multiscale Labels layer (its data_setitem fails on one): a fix
    writes the full-resolution labels as a run does, and the frame counts as edited."""
    from types import SimpleNamespace

    from napari_sansa.napari import edits
    from napari_sansa.napari.geometry import image_geometry
    from napari_sansa.napari.session import SansaSession

    viewer, image, levels = multiscale_viewer()
    paint = viewer.add_labels(np.zeros(levels[0].shape, np.uint8), scale=SCALE, translate=TRANSLATE)
    paint.data[0, 5:20, 5:20] = 1
    monkeypatch.setattr(outputs, "SINGLE_SCALE_MAX", 128)
    out = outputs.prepare_output(viewer, image, make_plan(image, [paint]))
    assert out.multiscale and not out.editable
    session = SansaSession(viewer)
    written = np.zeros((256, 256), np.uint8)
    written[100:150, 100:150] = 1
    labels_array(out)[1] = written
    edits.record(out, 1, written)
    mask = np.zeros((256, 256), bool)
    mask[120:200, 120:200] = True
    job = SimpleNamespace(names=["slide"], fix={"label": 1, "clicks": ()})
    result = SimpleNamespace(job=job, labels={(0, 1): mask}, logits=None)
    session.previews._write_fix(result)
    np.testing.assert_array_equal(labels_array(out)[1], mask.astype(np.uint8))
    np.testing.assert_array_equal(out.data[2][1], mask[::4, ::4])
    assert edits.is_edited(out, image_geometry(image), 1)
    assert "cannot undo it in a multiscale layer" in session.message
    # fine-tuning reads a multiscale output's annotated frames at its full resolution
    from napari_sansa.napari.training_frames import annotated_frames

    assert annotated_frames(out, image_geometry(image)) == [1]


def test_prompt_marks_grow_with_the_image_so_clicks_show_on_a_large_one():
    viewer = ViewerModel()
    small = viewer.add_image(np.zeros((256, 256), np.uint8), name="small")
    big = viewer.add_image(
        [np.zeros((2048, 2048), np.uint8), np.zeros((1024, 1024), np.uint8)],
        multiscale=True,
        name="big",
    )
    assert outputs.new_points_layer(viewer, small, 1, True).current_size == 8
    assert outputs.new_points_layer(viewer, big, 1, True).current_size == 32
    assert outputs.new_shapes_layer(viewer, small, 1).current_edge_width == 2
    assert outputs.new_shapes_layer(viewer, big, 1).current_edge_width == 8
    set_level(big, 1)  # at level 1 the layers have its pixels: half as many, twice as large
    assert outputs.new_points_layer(viewer, big, 1, True).current_size == 16


def test_the_preview_layer_of_a_coarser_level_is_found_again():
    """Each preview at level 1 made one more "slide [sansa preview] [1]", "[2]" ... (the
    full-resolution preview's name, renamed by napari); now one layer per level."""
    from napari_sansa.napari.session import SansaSession

    viewer, image, levels = multiscale_viewer()
    previews = SansaSession(viewer).previews
    full = previews.preview_layer(image)
    set_level(image, 1)
    coarse = previews.preview_layer(image)
    assert coarse is not full and coarse.data.shape == (2, 128, 128)
    assert coarse.name == "slide [sansa preview] (level 1)"
    assert previews.preview_layer(image) is coarse
    set_level(image, 0)
    assert previews.preview_layer(image) is full
    assert len(viewer.layers) == 3


def test_probability_and_object_layers_of_a_coarser_level_are_found_again():
    """As the output: one probability and one objects layer per level (each run at level 1
    made new "[1]", "[2]" ... copies, and tracks linked the full resolution's objects)."""
    from napari_sansa.napari.objects_output import ObjectsOutput

    viewer, image, levels = multiscale_viewer()
    paint = viewer.add_labels(np.zeros(levels[0].shape, np.uint8), scale=SCALE, translate=TRANSLATE)
    paint.data[0, 5:20, 5:20] = 1
    set_level(image, 1)
    plan = make_plan(image, [paint])
    (prob,) = outputs.prepare_probabilities(viewer, image, plan).values()
    assert prob.name == "slide [sansa p1] (level 1)" and prob.data.shape == (2, 128, 128)
    assert list(outputs.prepare_probabilities(viewer, image, plan).values()) == [prob]
    objects = ObjectsOutput(viewer, None, [image])
    layer = objects.layer(image)
    assert layer.name == "slide [sansa objects] (level 1)"
    assert objects.layer(image) is layer
    set_level(image, 0)
    assert (
        objects.layer(image) is not layer and objects.layer(image).name == "slide [sansa objects]"
    )


def test_a_folder_runs_references_come_from_the_level_labelled_with_their_prompts():
    """The Folder page's references (``folder_references``, read when Run is pressed) from a
    multiscale layer: its full resolution by default, the painted masks and the clicks on
    its pixels; at a coarser level, that level's pixels, prompts mapped onto them."""
    from napari_sansa.napari.folder import folder_references

    levels = [level[0] for level in pyramid(n=1, size=128)]  # one 2D image: 128, 64, 32
    viewer = ViewerModel()
    data = [da.from_array(level, chunks=(32, 32)) for level in levels]
    image = viewer.add_image(data, multiscale=True, scale=SCALE[1:], translate=TRANSLATE[1:])
    paint = np.zeros(levels[0].shape, np.uint8)
    paint[20:61, 30:91] = 1
    layer = viewer.add_labels(paint, name="paint", scale=SCALE[1:], translate=TRANSLATE[1:])
    clicks = viewer.add_points([world(100, 40)[1:]], name="clicks", features={"label": [2]})
    (ref,), _ = folder_references([image], [layer, clicks])
    assert np.shape(ref.image) == (128, 128)
    np.testing.assert_array_equal(np.asarray(ref.image[:, :]), levels[0])
    mask = next(p for p in ref.prompts if p.label == 1)
    np.testing.assert_array_equal(mask.mask, paint == 1)
    np.testing.assert_allclose(next(p for p in ref.prompts if p.label == 2).coords, [[100, 40]])
    set_level(image, 1)
    (ref,), _ = folder_references([image], [layer, clicks])
    np.testing.assert_array_equal(np.asarray(ref.image[:, :]), levels[1])
    np.testing.assert_array_equal(
        next(p for p in ref.prompts if p.label == 1).mask, paint[::2, ::2] == 1
    )
    np.testing.assert_allclose(next(p for p in ref.prompts if p.label == 2).coords, [[50, 20]])
