"""napari layers -> SANSA prompts and run plans (napari_sansa.napari.layers, .geometry, .plan).

Layers are real napari layer objects (no viewer needed): what a person draws in
them must become the core's prompt objects on the right frame, in the image's
pixel coordinates, or a message that names the layer and says what to change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Labels, Points, Shapes

import napari_sansa as ns
from napari_sansa.napari.geometry import FrameStack, PromptError, fit_problem, image_geometry
from napari_sansa.napari.layers import prompts_from_layers
from napari_sansa.napari.plan import make_plan

N, H, W = 5, 40, 60


def stack(n=N, h=H, w=W, rgb=False, dtype=np.uint8, seed=0):
    r = np.random.default_rng(seed)
    shape = (n, h, w, 3) if rgb else (n, h, w)
    return (r.random(shape) * 200).astype(dtype)


def by_frame(refs):
    return {r.frame: r for r in refs}


def one(prompts, kind):
    found = [p for p in prompts if isinstance(p, kind)]
    assert len(found) == 1, prompts
    return found[0]


# -- points ------------------------------------------------------------------------------


def test_points_become_clicks_on_their_frames_with_classes_and_negatives():
    image = Image(stack())
    points = Points(
        np.array([[0, 10, 20], [0, 12, 22], [0, 30, 40], [2.2, 5, 6], [2, 7, 8]]),
        features={"label": [1, 1, 2, 1, 1], "positive": [True, False, True, True, True]},
    )
    refs = by_frame(prompts_from_layers(image, [points]))
    assert sorted(refs) == [0, 2]  # 2.2 rounds to frame 2
    f0 = refs[0].prompts
    c1 = next(p for p in f0 if p.label == 1)
    np.testing.assert_allclose(c1.coords, [[10, 20], [12, 22]])
    assert c1.positive.tolist() == [True, False]
    c2 = next(p for p in f0 if p.label == 2)
    np.testing.assert_allclose(c2.coords, [[30, 40]])
    assert refs[2].classes == (1,)
    np.testing.assert_allclose(one(refs[2].prompts, ns.Points).coords, [[5, 6], [7, 8]])


def test_points_without_features_are_positive_clicks_of_class_1():
    refs = prompts_from_layers(Image(stack()), [Points(np.array([[3, 10, 10]]))])
    (ref,) = refs
    p = one(ref.prompts, ns.Points)
    assert (ref.frame, p.label, p.positive.tolist()) == (3, 1, [True])


def test_points_from_several_layers_are_merged_per_frame_and_class():
    image = Image(stack())
    positive = Points(np.array([[1, 10, 10]]))
    negative = Points(np.array([[1, 20, 20]]), features={"positive": [False]})
    (ref,) = prompts_from_layers(image, [positive, negative])
    p = one(ref.prompts, ns.Points)
    assert p.positive.tolist() == [True, False]


def test_points_follow_the_layers_transforms():
    # image pixels are 0.5 world units, shifted by (10, 20); the points layer is in world units
    image = Image(stack(), scale=(2, 0.5, 0.5), translate=(0, 10, 20))
    points = Points(np.array([[4, 15, 25]]))  # world (4, 15, 25) -> frame 2, row 10, col 10
    (ref,) = prompts_from_layers(image, [points])
    assert ref.frame == 2
    np.testing.assert_allclose(one(ref.prompts, ns.Points).coords, [[10, 10]])
    # the same point in a layer that shares the image's transform
    same = Points(np.array([[2, 10, 10]]), scale=(2, 0.5, 0.5), translate=(0, 10, 20))
    (ref2,) = prompts_from_layers(image, [same])
    assert ref2.frame == 2
    np.testing.assert_allclose(one(ref2.prompts, ns.Points).coords, [[10, 10]])


def test_points_follow_rotated_and_affine_images():
    image = Image(stack(), rotate=30, affine=np.diag([1.0, 1.5, 0.5, 1.0]))
    world = image.data_to_world([3, 12.0, 34.0])  # where pixel (12, 34) of frame 3 is
    (ref,) = prompts_from_layers(image, [Points(np.array([world]))])
    assert ref.frame == 3
    np.testing.assert_allclose(one(ref.prompts, ns.Points).coords, [[12, 34]], atol=1e-6)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(2, 2), (2.0, 2), ("3", 3), (np.int64(4), 4)]
    + [(v, None) for v in (0, -1, 2.5, "cat", float("nan"), True)],
)
def test_points_label_feature_values(value, ok):
    image = Image(stack())
    points = Points(
        np.array([[0, 10, 10]]), features=pd.DataFrame({"label": [value]}), name="clicks"
    )
    if ok is None:
        with pytest.raises(
            PromptError, match=r"point 0 of layer 'clicks' has label=.*whole number >= 1"
        ):
            prompts_from_layers(image, [points])
    else:
        (ref,) = prompts_from_layers(image, [points])
        assert ref.classes == (ok,)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(True, True), (np.bool_(False), False), (1, True), (0.0, False), ("false", False)]
    + [(v, None) for v in (2, "maybe", float("nan"), -1)],
)
def test_points_positive_feature_values(value, ok):
    image = Image(stack())
    # a second, positive click keeps the class valid when the first is negative
    points = Points(
        np.array([[0, 10, 10], [0, 20, 20]]),
        features=pd.DataFrame({"positive": pd.Series([value, True], dtype=object)}),
        name="clicks",
    )
    if ok is None:
        with pytest.raises(
            PromptError, match=r"point 0 of layer 'clicks' has positive=.*True .* or False"
        ):
            prompts_from_layers(image, [points])
    else:
        (ref,) = prompts_from_layers(image, [points])
        assert one(ref.prompts, ns.Points).positive.tolist() == [ok, True]


def test_only_negative_clicks_on_a_frame_is_refused_with_the_frame():
    points = Points(np.array([[1, 10, 10]]), features={"positive": [False]}, name="clicks")
    with pytest.raises(PromptError, match=r"frame 1: all points of class 1 are negative.*'clicks'"):
        prompts_from_layers(Image(stack()), [points])


def test_points_outside_the_image_or_its_frames_are_refused():
    image = Image(stack())
    with pytest.raises(PromptError, match=r"point 0 of layer 'p' lies outside the 40x60 image"):
        prompts_from_layers(image, [Points(np.array([[0, 50, 10]]), name="p")])
    with pytest.raises(PromptError, match=r"point 1 of layer 'p' is at frame position \(7\)"):
        prompts_from_layers(image, [Points(np.array([[0, 5, 10], [7, 5, 10]]), name="p")])


# -- shapes ------------------------------------------------------------------------------


def rect(frame, r0, c0, r1, c1):
    return np.array([[frame, r0, c0], [frame, r0, c1], [frame, r1, c1], [frame, r1, c0]], float)


def test_shapes_become_boxes_scribbles_and_masks():
    image = Image(stack())
    shapes = Shapes(
        [
            rect(0, 5, 10, 15, 30),  # rectangle -> box
            np.array([[1, 5, 5], [1, 10, 20], [1, 12, 30]]),  # path -> scribble
            np.array([[1, 30, 5], [1, 35, 25]]),  # line -> scribble
            np.array([[3, 10, 10], [3, 10, 20], [3, 20, 20], [3, 20, 10]]),  # polygon -> mask
            rect(4, 10, 20, 30, 50),  # ellipse (its bounding box) -> mask
        ],
        shape_type=["rectangle", "path", "line", "polygon", "ellipse"],
        features={"label": [1, 2, 2, 1, 3]},
    )
    refs = by_frame(prompts_from_layers(image, [shapes]))
    assert sorted(refs) == [0, 1, 3, 4]
    box = one(refs[0].prompts, ns.Box)
    assert (box.box, box.label) == ((5.0, 10.0, 15.0, 30.0), 1)
    scribbles = [p for p in refs[1].prompts if isinstance(p, ns.Scribble)]
    assert [s.label for s in scribbles] == [2, 2]
    np.testing.assert_allclose(scribbles[0].path, [[5, 5], [10, 20], [12, 30]])
    np.testing.assert_allclose(scribbles[1].path, [[30, 5], [35, 25]])
    square = one(refs[3].prompts, ns.Mask)
    expected = np.zeros((H, W), bool)
    expected[10:21, 10:21] = True  # pixel centres inside (or on) the polygon
    assert square.label == 1
    assert np.array_equal(square.mask, expected)
    ellipse = one(refs[4].prompts, ns.Mask)
    assert ellipse.label == 3
    # an ellipse with semi-axes 10 and 15 pixels: about pi * 10 * 15 pixels
    assert abs(ellipse.mask.sum() - np.pi * 10 * 15) < 0.08 * np.pi * 10 * 15
    assert ellipse.mask[20, 35] and not ellipse.mask[11, 21]


def test_shapes_follow_the_layers_transforms():
    image = Image(stack(), scale=(1, 2, 2))  # a shapes layer in world units
    shapes = Shapes([rect(2, 10, 20, 30, 60)], shape_type="rectangle")
    (ref,) = prompts_from_layers(image, [shapes])
    assert ref.frame == 2
    assert one(ref.prompts, ns.Box).box == (5.0, 10.0, 15.0, 30.0)


def test_a_shape_across_frames_is_refused():
    shapes = Shapes([np.array([[0, 5, 5], [2, 10, 10]])], shape_type="path", name="s")
    with pytest.raises(PromptError, match="shape 0 of layer 's' spans several frames"):
        prompts_from_layers(Image(stack()), [shapes])


def test_a_degenerate_rectangle_gets_a_message_naming_the_shape():
    shapes = Shapes([rect(0, 5, 5, 5, 20)], shape_type="rectangle", name="boxes")
    with pytest.raises(PromptError, match=r"shape 0 of layer 'boxes' on frame 0: .*degenerate"):
        prompts_from_layers(Image(stack()), [shapes])


# -- labels ------------------------------------------------------------------------------


def test_labels_give_one_mask_per_class_and_frame():
    data = np.zeros((N, H, W), np.uint8)
    data[1, 5:10, 5:10] = 1
    data[1, 20:30, 20:30] = 2
    data[4, 0:3, 0:3] = 1
    refs = by_frame(prompts_from_layers(Image(stack()), [Labels(data)]))
    assert sorted(refs) == [1, 4]
    masks = refs[1].masks()
    assert sorted(masks) == [1, 2]
    assert np.array_equal(masks[1], data[1] == 1) and np.array_equal(masks[2], data[1] == 2)
    assert np.array_equal(refs[4].masks()[1], data[4] == 1)


def test_labels_of_the_frames_shape_fit_an_rgb_stack():
    image = Image(stack(rgb=True), rgb=True)
    assert image_geometry(image).shape == (N, H, W)
    data = np.zeros((N, H, W), np.uint8)
    data[2, 5:10, 5:10] = 1
    assert fit_problem(image, Labels(data)) is None
    (ref,) = prompts_from_layers(image, [Labels(data)])
    assert ref.frame == 2


@pytest.mark.parametrize(
    ("shape", "scale"),
    [((N, H, W + 1), None), ((N, H, W, 3), None), ((N, H, W), (1, 2, 2))],
    ids=["other-size", "with-colour-axis", "other-scale"],
)
def test_labels_that_do_not_lie_on_the_image_pixels_are_refused(shape, scale):
    image = Image(stack(rgb=True), rgb=True, name="img")
    labels = Labels(np.zeros(shape, np.uint8), name="masks", scale=scale)
    problem = fit_problem(image, labels)
    assert problem is not None and "'masks'" in problem
    assert ("shape" in problem) if scale is None else ("scale" in problem)
    with pytest.raises(PromptError):
        prompts_from_layers(image, [labels])


def test_mask_and_clicks_of_one_class_on_one_frame_are_refused_with_the_frame():
    data = np.zeros((N, H, W), np.uint8)
    data[2, 5:10, 5:10] = 1
    layers = [Labels(data, name="paint"), Points(np.array([[2, 20, 20]]), name="clicks")]
    with pytest.raises(
        PromptError, match=r"frame 2 \(layers 'clicks', 'paint'\): class 1 has both a mask"
    ):
        prompts_from_layers(Image(stack()), layers)
    # other classes, or other frames, are fine
    layers[1] = Points(np.array([[2, 20, 20]]), features={"label": [2]}, name="clicks")
    (ref,) = prompts_from_layers(Image(stack()), layers)
    assert ref.classes == (1, 2)


# -- fit, dimensions, frames ------------------------------------------------------------


def test_a_2d_prompt_layer_does_not_fit_a_stack():
    image = Image(stack(), name="img")
    points = Points(np.array([[10, 10]]), name="flat")
    assert "has 2 dimensions but the image 'img' has 3" in fit_problem(image, points)
    with pytest.raises(PromptError, match="has 2 dimensions"):
        make_plan(image, [points])


def test_four_dimensional_stacks_number_frames_over_the_leading_axes():
    data = np.random.default_rng(0).integers(0, 255, (2, 3, H, W), dtype=np.uint8)
    image = Image(data)
    points = Points(np.array([[1, 2, 10, 10]]))
    (ref,) = prompts_from_layers(image, [points])
    assert ref.frame == 1 * 3 + 2
    plan = make_plan(image, [points])
    assert plan.targets == (0, 1, 2, 3, 4)
    assert np.array_equal(plan.stack[5], data[1, 2])
    assert plan.geometry.describe(5) == "frame 5 (index 1, 2)"


def test_a_2d_image_with_2d_prompts_is_one_reference_and_nothing_to_label():
    image = Image(stack()[0], name="photo")
    points = Points(np.array([[10, 10]]))
    (ref,) = prompts_from_layers(image, [points])
    assert ref.frame == 0
    with pytest.raises(PromptError, match="'photo' is a single image .* nothing is left to label"):
        make_plan(image, [points])


def test_plan_references_targets_and_range():
    image = Image(stack(n=6))
    points = Points(np.array([[1, 10, 10], [4, 10, 10]]))
    plan = make_plan(image, [points])
    assert [r.frame for r in plan.references] == [1, 4]
    assert plan.targets == (0, 2, 3, 5)
    assert plan.total == 6
    assert make_plan(image, [points], (2, 4)).targets == (2, 3)
    with pytest.raises(PromptError, match="every frame from 4 to 4 .* has prompts"):
        make_plan(image, [points], (4, 4))


def test_plan_refuses_missing_image_no_layers_no_prompts_and_prompts_everywhere():
    image = Image(stack(n=2), name="img")
    with pytest.raises(PromptError, match="there is no image layer"):
        make_plan(None, [])
    with pytest.raises(PromptError, match="no prompt layers are selected"):
        make_plan(image, [])
    with pytest.raises(PromptError, match=r"\('pts'\) hold no prompts for 'img'"):
        make_plan(image, [Points(ndim=3, name="pts")])
    everywhere = Points(np.array([[0, 10, 10], [1, 10, 10]]))
    with pytest.raises(PromptError, match="every frame of 'img' has prompts"):
        make_plan(image, [everywhere])


def test_plan_scales_non_uint8_images_with_the_contrast_limits():
    image = Image(stack(dtype=np.uint16) * 100, contrast_limits=(100, 9000))
    plan = make_plan(image, [Points(np.array([[0, 10, 10]]))])
    assert plan.intensity_range == (100.0, 9000.0)
    assert make_plan(Image(stack()), [Points(np.array([[0, 10, 10]]))]).intensity_range is None


class CountingArray:
    """An array-like that counts the frames read from it (as a lazy store would)."""

    def __init__(self, data):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, index):
        if isinstance(index, tuple) and len(index) == 1 and isinstance(index[0], int):
            self.reads.append(index[0])
        return self.data[index]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole stack was read")

    def __len__(self):
        return len(self.data)


def test_frames_are_read_lazily_one_at_a_time():
    data = stack()
    lazy = CountingArray(data)
    frames = FrameStack(lazy, image_geometry(Image(data)))
    picked = frames.select([3, 1])
    assert isinstance(picked, FrameStack) and len(picked) == 2
    assert lazy.reads == []  # making and selecting reads nothing
    np.testing.assert_array_equal(picked[0], data[3])
    assert lazy.reads == [3]  # one frame, when asked for
    assert [np.array_equal(f, data[i]) for f, i in zip(picked, [3, 1], strict=True)] == [1, 1]
    assert lazy.reads == [3, 3, 1]


def test_a_plan_on_a_dask_image_reads_no_frame():
    da = pytest.importorskip("dask.array")
    data = stack()
    lazy = da.from_array(data, chunks=(1, H, W))
    image = Image(lazy)
    plan = make_plan(image, [Points(np.array([[0, 10, 10]]))])
    assert plan.stack.data is lazy  # the layer's own lazy array, not a copy in memory
    frames = plan.stack.select(plan.targets)
    assert isinstance(frames[0], np.ndarray)
    assert all(np.array_equal(f, data[i + 1]) for i, f in enumerate(frames))


def test_reading_prompts_leaves_the_layers_as_they_were():
    points = Points(
        np.array([[0, 10, 10], [0, 12, 12]]),
        features={"label": [1, 2], "positive": [True, True]},
    )
    shapes = Shapes([rect(1, 5, 5, 15, 15)], shape_type="polygon")
    labels_data = np.zeros((N, H, W), np.uint8)
    labels_data[2, 3:8, 3:8] = 4
    labels = Labels(labels_data.copy())
    before = (points.data.copy(), points.features.copy(), [d.copy() for d in shapes.data])
    make_plan(Image(stack()), [points, shapes, labels])
    np.testing.assert_array_equal(points.data, before[0])
    pd.testing.assert_frame_equal(points.features, before[1])
    for a, b in zip(shapes.data, before[2], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels.data, labels_data)
