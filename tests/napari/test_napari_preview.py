"""The annotation loop on the shown frame (issue 20): previews that are the run's own
reference masks, prepared frames, fixing a labelled frame with clicks, and bad input.

The session runs its preview jobs at once when it has no ``create_worker`` (a bare
``ViewerModel``): these tests need no Qt. The widget's switch, its debounce and the
background worker are tested in tests/napari/_qt/test_preview_panel.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CONFIG, SIZE, make_image
from napari_sansa.napari.worker import RunSettings

N, H, W = 3, 48, 64


@pytest.fixture
def source(weights):
    from napari_sansa.core.models.source import ModelSource

    sam2, adapters = weights
    return ModelSource(
        config=CONFIG,
        sam2_checkpoint=str(sam2),
        adapter_checkpoint=str(adapters),
        device="cpu",
        image_size=SIZE,
    )


@pytest.fixture
def session(shared_model_cache):
    from napari.components import ViewerModel

    from napari_sansa.napari.session import SansaSession

    viewer = ViewerModel()
    s = SansaSession(viewer, models=shared_model_cache)
    s.messages = []  # the session's status and the preview's own state, in order
    s.status.connect(s.messages.append)
    s.previews.status.connect(s.messages.append)
    return s


def stack(n=N, shape=(H, W), dtype=np.uint8, seed=40):
    data = np.stack([make_image(seed + i, shape, rgb=False) for i in range(n)])
    if dtype != np.uint8:
        data = data.astype(dtype) * 200
    return data


def add_prompts(viewer, image, frame=1):
    """Clicks of class 1 (one negative), a box of class 2, paint of class 3 on ``frame``."""
    lead = [frame] if image.ndim == 3 else list(np.unravel_index(frame, image.data.shape[:-2]))
    points = viewer.add_points(
        [[*lead, 20, 20], [*lead, 22, 30], [*lead, 10, 50]],
        name="clicks",
        features={"label": [1, 1, 1], "positive": [True, True, False]},
    )
    shapes = viewer.add_shapes(
        [np.array([[*lead, r, c] for r, c in ((30, 5), (30, 25), (45, 25), (45, 5))])],
        shape_type="rectangle",
        name="boxes",
        features={"label": [2]},
    )
    paint = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="paint")
    paint.data[(*lead, slice(5, 15), slice(40, 60))] = 3
    return [points, shapes, paint]


def run_reference(session, images, layers, source, settings, part_frame):
    """The class map the run itself writes for a reference frame (the worker's generator)."""
    from napari_sansa.napari.imageset import make_set_plan
    from napari_sansa.napari.worker import run_frames

    plan = make_set_plan(images, layers)
    found = [
        result.labels
        for result in run_frames(plan, source, settings, session.models)
        if result.is_reference and (result.part, result.frame) == part_frame
    ]
    assert len(found) == 1, "the run gave no such reference"
    return found[0]


# -- the preview is the run's reference mask ---------------------------------------------


def test_the_preview_is_the_mask_the_run_takes_from_the_prompts(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    layers = add_prompts(viewer, image, frame=1)
    settings = RunSettings()
    job = session.previews.request(image, layers, source, settings, [(0, 1)])
    assert job is not None and session.previews.last.error is None, session.messages
    preview = viewer.layers["cells [sansa preview]"]
    shown = np.asarray(preview.data[1])
    assert set(np.unique(shown)) == {0, 1, 2, 3}
    assert not preview.data[0].any() and not preview.data[2].any()
    # exactly what the run writes for that reference frame ...
    np.testing.assert_array_equal(
        shown, run_reference(session, [image], layers, source, settings, (0, 1))
    )
    # ... and the core's decoding of that reference, with the painted class laid over it
    import napari_sansa as ns
    from napari_sansa.napari.layers import prompts_from_layers

    ref = prompts_from_layers(image, layers)[0]
    model = session.models.get(source)
    decoded = model.prepare_references([ns.Reference(image.data[1], ref.prompts)]).decoded[0]
    painted = np.asarray(layers[2].data[1]) == 3
    np.testing.assert_array_equal(shown[~painted], decoded.labels[~painted])
    assert (shown[painted] == 3).all()
    # the prompt layers are only read
    assert len(layers[0].data) == 3 and len(layers[1].data) == 1
    assert "preview of frame 1: classes 1, 2, 3" in session.messages[-1]


def test_in_an_image_set_the_preview_is_scaled_as_the_run_scales_it(session, source):
    """The run scales each image by its own range when the set's ranges differ: the
    reference's decoding depends on the other images of the set, and so does the preview."""
    viewer = session.viewer
    a = viewer.add_image(stack(1)[0].astype(np.uint16) * 100, name="a", contrast_limits=(0, 9000))
    b = viewer.add_image(make_image(7, (40, 56), rgb=False), name="b")
    points = viewer.add_points(
        [[20, 20], [30, 30]],
        name="a clicks",
        features={"label": [1, 1], "positive": [True, True]},
        metadata={"napari-sansa-image": "a"},
    )
    settings = RunSettings()
    session.previews.request([a, b], [points], source, settings, [(0, 0), (1, 0)])
    assert session.previews.last.error is None, session.messages
    shown = np.asarray(viewer.layers["a [sansa preview]"].data)
    assert shown.any()
    np.testing.assert_array_equal(
        shown, run_reference(session, [a, b], [points], source, settings, (0, 0))
    )
    assert "b [sansa preview]" not in viewer.layers  # no prompts there, nothing to show


def test_a_single_image_with_prompts_previews_instead_of_being_refused(session, source):
    viewer = session.viewer
    image = viewer.add_image(make_image(3, (H, W)), name="photo")
    points = viewer.add_points([[20, 30]], name="clicks")
    assert session.run(image, [points], source) is None  # a run has nothing to label
    session.previews.request(image, [points], source, RunSettings(), [(0, 0)])
    assert session.previews.last.error is None
    assert viewer.layers["photo [sansa preview]"].data.any()


def test_a_frame_of_a_t_by_z_stack_previews(session, source):
    viewer = session.viewer
    data = stack(6).reshape(2, 3, H, W)
    image = viewer.add_image(data, name="tz", axis_labels=("t", "z", "y", "x"))
    layers = add_prompts(viewer, image, frame=4)  # t=1, z=1
    settings = RunSettings()
    session.previews.request(image, layers, source, settings, [(0, 4)])
    preview = viewer.layers["tz [sansa preview]"]
    assert preview.data.shape == data.shape
    assert preview.data[1, 1].any() and not preview.data[0].any()
    np.testing.assert_array_equal(
        preview.data[1, 1], run_reference(session, [image], layers, source, settings, (0, 4))
    )
    assert session.messages[-1] == "preview of t=1, z=1 (frame 4): classes 1, 2, 3"


def test_painted_masks_preview_as_themselves_without_the_model(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    paint = viewer.add_labels(np.zeros((N, H, W), np.uint8), name="paint")
    paint.data[2, 10:20, 10:30] = 4
    paint.data[2, 15:25, 25:40] = 5
    loads = session.models.loads
    session.previews.request(image, [paint], source, RunSettings(), [(0, 2)])
    np.testing.assert_array_equal(viewer.layers["cells [sansa preview]"].data[2], paint.data[2])
    assert session.models.loads == loads


def test_the_switch_turns_previews_off(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[0, 20, 30]], name="clicks")
    session.previews.enabled = False
    assert session.previews.request(image, [points], source, RunSettings(), [(0, 0)]) is None
    assert session.previews.prepare(image, source, RunSettings(), [(0, 0)]) is None
    assert "cells [sansa preview]" not in viewer.layers


def test_prompts_removed_from_the_frame_clear_its_preview(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[1, 20, 30]], name="clicks")
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    assert viewer.layers["cells [sansa preview]"].data[1].any()
    points.data = np.zeros((0, 3))
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    assert not viewer.layers["cells [sansa preview]"].data[1].any()


# -- prepared frames ------------------------------------------------------------------------


def counting_encoder(monkeypatch, model):
    calls = []
    real = model.engine.encode

    def encode(images):
        calls.append(images.shape[0])
        return real(images)

    monkeypatch.setattr(model.engine, "encode", encode)
    return calls


def test_a_prepared_frame_is_not_encoded_again_by_the_preview_or_the_run(
    session, source, monkeypatch
):
    viewer = session.viewer
    image = viewer.add_image(stack(seed=90), name="cells")  # pixels no other test encodes
    model = session.models.get(source)
    calls = counting_encoder(monkeypatch, model)
    session.previews.prepare(image, source, RunSettings(), [(0, 2)])
    assert calls == [1]
    assert ("cells", 2) in session.previews.prepared
    assert session.messages[-1] == "frame 2 ready: its prompts preview at once"
    assert "preparing frame 2..." in session.messages
    assert session.previews.prepare(image, source, RunSettings(), [(0, 2)]) is None  # known
    points = viewer.add_points([[2, 20, 30]], name="clicks")
    session.previews.request(image, [points], source, RunSettings(), [(0, 2)])
    assert calls == [1]  # the preview took the features from the cache
    run_reference(session, [image], [points], source, RunSettings(), (0, 2))
    assert sum(calls) == 1 + (N - 1)  # the run encoded the targets only


# -- fix with a click ---------------------------------------------------------------------


def labelled(session, source):
    """A stack with a run's output: frames 0 and 2 labelled by the run, frame 1 a reference."""
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    paint = viewer.add_labels(np.zeros((N, H, W), np.uint8), name="paint")
    paint.data[1, 10:30, 15:40] = 1
    from napari_sansa.napari import edits
    from napari_sansa.napari.geometry import META_KEY
    from napari_sansa.napari.imageset import make_set_plan
    from napari_sansa.napari.worker import run_frames

    out = viewer.add_labels(
        np.zeros((N, H, W), np.uint8), name="cells [sansa]", metadata={META_KEY: "output"}
    )
    for r in run_frames(make_set_plan([image], [paint]), source, RunSettings(), session.models):
        out.data[r.frame] = r.labels
        edits.record(out, r.frame, r.labels)
    return image, paint, out


def test_clicks_redraw_a_class_on_a_labelled_frame_undoably(session, source):
    from napari_sansa.core.preview import redraw_mask

    image, paint, out = labelled(session, source)
    before = np.array(out.data)
    assert session.edited_frames(image) == []
    job = session.previews.fix(image, 2, 1, source, RunSettings(), points=[[24, 30]])
    assert job is not None and session.previews.last.error is None, session.messages
    model = session.models.get(source)
    expected, logits = redraw_mask(model, image.data[2], points=[[24, 30]], mask=before[2] == 1)
    np.testing.assert_array_equal(out.data[2] == 1, expected)
    assert not np.array_equal(out.data[2], before[2])
    np.testing.assert_array_equal(out.data[[0, 1]], before[[0, 1]])  # only that frame
    assert session.edited_frames(image) == [2]  # counts as edited by hand ...
    refs = session.promote(image, 2)  # ... and can be taken as a reference
    assert refs is not None and (np.asarray(refs.data[2]) == 1).any()
    # a second click continues the first: the last logits are SAM2's mask prompt
    session.previews.fix(
        image, 2, 1, source, RunSettings(), points=[[24, 30], [5, 5]], positive=[True, False]
    )
    second, _ = redraw_mask(
        model, image.data[2], points=[[24, 30], [5, 5]], positive=[True, False], logits=logits
    )
    np.testing.assert_array_equal(out.data[2] == 1, second)
    # napari's own undo, one step per fix
    out.undo()
    np.testing.assert_array_equal(out.data[2] == 1, expected)
    out.undo()
    np.testing.assert_array_equal(out.data, before)
    np.testing.assert_array_equal(paint.data[1] == 1, before[1] == 1)  # prompts untouched


def test_a_box_redraws_a_class(session, source):
    from napari_sansa.core.preview import redraw_mask

    image, _, out = labelled(session, source)
    before = np.array(out.data)
    session.previews.fix(image, 0, 1, source, RunSettings(), box=(5, 5, 40, 60))
    assert session.previews.last.error is None, session.messages
    model = session.models.get(source)
    mask, _ = redraw_mask(model, image.data[0], box=(5, 5, 40, 60), mask=before[0] == 1)
    np.testing.assert_array_equal(out.data[0] == 1, mask & np.isin(before[0], (0, 1)))


def test_clicks_and_a_box_fix_a_16_bit_time_lapse_with_a_channel_axis(session, source):
    """T x C x Y x X, 16-bit, channel axis chosen: a click and a box redraw the class on
    the frame from the channel the run reads, on every channel of the output, undoably."""
    from napari_sansa.core.preview import redraw_mask
    from napari_sansa.napari import edits
    from napari_sansa.napari.axes import set_axes
    from napari_sansa.napari.geometry import META_KEY, image_geometry
    from napari_sansa.napari.imageset import make_set_plan
    from napari_sansa.napari.worker import SetFrames, run_frames

    viewer = session.viewer
    data = np.stack([stack(seed=120), stack(seed=130)], axis=1).astype(np.uint16) * 200
    image = viewer.add_image(data, name="cells")  # (3, 2, 48, 64)
    set_axes(image, 1, (1,))  # channel axis 1, its second channel shown as gray
    geometry = image_geometry(image)
    assert geometry.n_frames == N and geometry.channel_axis == 1
    paint = viewer.add_labels(np.zeros(data.shape, np.uint8), name="paint")
    paint.data[1, :, 10:30, 15:40] = 1
    out = viewer.add_labels(
        np.zeros(data.shape, np.uint8), name="cells [sansa]", metadata={META_KEY: "output"}
    )
    plan = make_set_plan([image], [paint])
    for r in run_frames(plan, source, RunSettings(), session.models):
        out.data[geometry.index(r.frame)] = r.labels
        edits.record(out, r.frame, r.labels)
    before = np.array(out.data)
    job = session.previews.fix(image, 2, 1, source, RunSettings(), points=[[24, 30]])
    assert job is not None and session.previews.last.error is None, session.messages
    assert "fixed class 1 on frame 2" in session.messages[-1], session.messages
    model = session.models.get(source)
    reader = SetFrames(make_set_plan([image], [paint]), (), scale=True)
    frame2 = reader.read(0, 2)  # the frame as the run reads it (channel 1, its range)
    expected, _ = redraw_mask(model, frame2, points=[[24, 30]], mask=before[2, 0] == 1)
    for c in range(2):  # the same labels on every channel
        np.testing.assert_array_equal(out.data[2, c] == 1, expected)
    assert not np.array_equal(out.data[2], before[2])
    np.testing.assert_array_equal(out.data[:2], before[:2])
    assert session.edited_frames(image) == [2]
    out.undo()  # one step
    np.testing.assert_array_equal(out.data, before)
    # a box too
    session.previews.fix(image, 0, 1, source, RunSettings(), box=(5, 5, 40, 60))
    assert session.previews.last.error is None, session.messages
    frame0 = reader.read(0, 0)
    mask, _ = redraw_mask(model, frame0, box=(5, 5, 40, 60), mask=before[0, 0] == 1)
    for c in range(2):
        np.testing.assert_array_equal(out.data[0, c] == 1, mask & np.isin(before[0, c], (0, 1)))
    # clearing the class on a frame of a painted prompt layer with a channel axis
    assert session.previews.clear_class(image, 1, 1, [paint]) == 20 * 25
    assert not paint.data[1].any()
    paint.undo()
    assert (paint.data[1, :, 10:30, 15:40] == 1).all()


def test_bad_clicks_change_nothing_and_say_why(session, source, notifications):
    image, paint, out = labelled(session, source)
    before = np.array(out.data)
    fix = session.previews.fix
    assert fix(image, 2, 1, source, RunSettings(), points=[[10, W + 5]]) is None
    assert "outside the 48x64 image" in session.messages[-1]
    assert fix(image, N + 2, 1, source, RunSettings(), points=[[10, 10]]) is None
    assert "outside 'cells' (frames 0..2)" in session.messages[-1]
    assert fix(image, 2, 1, source, RunSettings()) is None
    assert "at least one click or a box" in session.messages[-1]
    out.data[2] = 0  # a frame nobody labelled
    from napari_sansa.napari import edits

    out.metadata[edits.WRITTEN_KEY].pop(2)
    assert fix(image, 2, 1, source, RunSettings(), points=[[10, 10]]) is None
    assert "was not labelled by a run" in session.messages[-1]
    other = session.viewer.add_image(stack(), name="other")
    assert fix(other, 0, 1, source, RunSettings(), points=[[10, 10]]) is None
    assert "run SANSA first" in session.messages[-1]
    np.testing.assert_array_equal(out.data[:2], before[:2])
    assert paint.data[1].any()


def test_a_preview_outside_the_frames_says_so(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[0, 20, 30]], name="clicks")
    assert session.previews.request(image, [points], source, RunSettings(), [(0, 7)]) is None
    assert "frame 7 is outside 'cells'" in session.messages[-1]
    assert "cells [sansa preview]" not in viewer.layers


def test_a_negative_only_click_says_what_to_add(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points(
        [[1, 20, 30]], name="clicks", features={"label": [1], "positive": [False]}
    )
    assert session.previews.request(image, [points], source, RunSettings(), [(0, 1)]) is None
    assert "add at least one positive click" in session.messages[-1]
    assert len(points.data) == 1


def test_one_action_clears_a_class_on_the_shown_frame(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points(
        [[1, 20, 30], [1, 25, 35], [2, 20, 30]],
        name="clicks",
        features={"label": [1, 2, 1], "positive": [True, True, True]},
    )
    shapes = viewer.add_shapes(
        [np.array([[1, 5, 5], [1, 5, 20], [1, 20, 20], [1, 20, 5]])],
        shape_type="rectangle",
        name="boxes",
        features={"label": [1]},
    )
    paint = viewer.add_labels(np.zeros((N, H, W), np.uint8), name="paint")
    paint.data[1, :5, :5] = 1
    paint.data[1, 40:, 40:] = 2
    removed = session.previews.clear_class(image, 1, 1, [points, shapes, paint])
    assert removed == 1 + 1 + 25
    np.testing.assert_array_equal(points.data, [[1, 25, 35], [2, 20, 30]])
    assert points.features["label"].tolist() == [2, 1]  # each point kept its own class
    assert len(shapes.data) == 0
    assert not (paint.data[1] == 1).any() and (paint.data[1] == 2).any()
    paint.undo()
    assert (paint.data[1, :5, :5] == 1).all()


# -- waiting and changing models ------------------------------------------------------------


def test_a_preview_during_a_run_waits_for_it(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[1, 20, 30]], name="clicks")
    session.worker = object()  # a run is going
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    assert session.previews.state == "waiting"
    assert "preview waits: a run is going" in session.messages[-1]
    assert "cells [sansa preview]" not in viewer.layers
    session.worker = None
    session.running.emit(False)  # the run ended
    assert viewer.layers["cells [sansa preview]"].data[1].any()
    # fine-tuning (the widget adds its blocker) holds previews back the same way
    session.previews.blockers.append(lambda: "fine-tuning is running")
    points.add([1, 30, 40])
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    assert "fine-tuning is running" in session.messages[-1]
    session.previews.blockers.clear()
    session.previews.resume()
    assert session.previews.state == "idle"


def test_a_model_change_with_cached_features_previews_with_the_new_model(session, source, tmp_path):
    from dataclasses import replace

    from napari_sansa.core.models.random_weights import write_random_checkpoints

    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[1, 20, 30], [1, 24, 34]], name="clicks")
    session.previews.prepare(image, source, RunSettings(), [(0, 1)])
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    first = np.array(viewer.layers["cells [sansa preview]"].data[1])
    sam2, adapters = write_random_checkpoints(tmp_path, CONFIG, image_size=SIZE, seed=5)
    other = replace(source, sam2_checkpoint=str(sam2), adapter_checkpoint=str(adapters))
    session.previews.request(image, [points], other, RunSettings(), [(0, 1)])
    assert session.previews.last.error is None, session.messages
    assert any("loading the model" in m for m in session.messages)
    new = session.models.get(other)
    import napari_sansa as ns
    from napari_sansa.napari.worker import reference_labels

    expected = new.prepare_references(
        [ns.Reference(image.data[1], [ns.Points([[20, 30], [24, 34]])])]
    ).decoded[0]
    np.testing.assert_array_equal(
        viewer.layers["cells [sansa preview]"].data[1], reference_labels(expected, {}, np.uint8)
    )
    assert first.shape == expected.labels.shape
    session.models.clear()  # the shared cache goes back to the tests' model


def test_only_frames_whose_prompts_changed_are_decoded_again(session, source, monkeypatch):
    viewer = session.viewer
    a = viewer.add_image(make_image(11, (H, W), rgb=False), name="a")
    b = viewer.add_image(make_image(12, (H, W), rgb=False), name="b", translate=(0, W + 10))
    meta = {"napari-sansa-image": "a"}
    pa = viewer.add_points([[20, 20]], name="pa", metadata=meta)
    pb = viewer.add_points([[20, W + 30]], name="pb", metadata={"napari-sansa-image": "b"})
    frames = [(0, 0), (1, 0)]
    assert session.previews.request([a, b], [pa, pb], source, RunSettings(), frames).frames == (
        (0, 0),
        (1, 0),
    )
    assert session.previews.request([a, b], [pa, pb], source, RunSettings(), frames) is None
    pb.add([30, W + 40])
    job = session.previews.request([a, b], [pa, pb], source, RunSettings(), frames)
    assert job.frames == ((1, 0),)
    c = viewer.add_image(make_image(13, (H, W), rgb=False), name="c", translate=(H + 10, 0))
    both = run_reference(session, [a, b, c], [pa, pb], source, RunSettings(), (1, 0))
    np.testing.assert_array_equal(viewer.layers["b [sansa preview]"].data, both)
    job = session.previews.request(
        [a, b], [pa, pb], source, RunSettings.make(threshold=0.3), frames
    )
    assert job.frames == ((0, 0), (1, 0))  # another setting: both again


def test_a_failing_preview_is_said_and_raises_nothing(session, source, monkeypatch):
    viewer = session.viewer
    image = viewer.add_image(stack(), name="cells")
    points = viewer.add_points([[1, 20, 30]], name="clicks")

    def broken(settings):
        raise KeyError("a bug")

    monkeypatch.setattr(session.models, "get", broken)
    session.previews.request(image, [points], source, RunSettings(), [(0, 1)])
    assert session.previews.message == "preview: failed: KeyError: 'a bug'"
    assert session.messages[-1] == session.previews.message
    assert "cells [sansa preview]" not in viewer.layers
    assert session.previews.state == "idle"


def test_with_tiles_the_preview_is_the_runs_tiled_reference(session, source):
    viewer = session.viewer
    image = viewer.add_image(stack(shape=(2 * H, 2 * W), seed=95), name="cells")
    points = viewer.add_points([[1, 40, 40], [1, 60, 100]], name="clicks")
    settings = RunSettings.make(tile_size=64)  # 6 tiles (tiles of 64 at least)
    session.previews.request(image, [points], source, settings, [(0, 1)])
    assert session.previews.last.error is None, session.messages
    shown = np.array(viewer.layers["cells [sansa preview]"].data[1])
    np.testing.assert_array_equal(
        shown, run_reference(session, [image], [points], source, settings, (0, 1))
    )


def test_channel_layers_preview_as_the_run_reads_them(session, source):
    from napari_sansa.napari.imageset import make_set_plan
    from napari_sansa.napari.worker import run_frames

    viewer = session.viewer
    red = viewer.add_image(stack(seed=100), name="red")
    green = viewer.add_image(stack(seed=110).astype(np.uint16) * 50, name="green")
    points = viewer.add_points([[1, 20, 20]], name="clicks")
    settings = RunSettings()
    session.previews.request([red, green], [points], source, settings, [(0, 1)], True)
    assert session.previews.last.error is None, session.messages
    shown = np.array(viewer.layers["red [sansa preview]"].data[1])
    assert "green [sansa preview]" not in viewer.layers
    plan = make_set_plan([red, green], [points], as_channels=True)
    run = [r for r in run_frames(plan, source, settings, session.models) if r.is_reference]
    np.testing.assert_array_equal(shown, run[0].labels)
