"""SAM2's propagation of objects from frame to frame (core.propagation) and the tracker's
``moved=`` linking on it (core.tracks)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sansa as ns
from conftest import load_test_model, make_image


def disk(shape, centre, r):
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < r * r


def paint(shape, *objects):
    out = np.zeros(shape, np.uint16)
    for label, centre, r in objects:
        out[disk(shape, centre, r)] = label
    return out


SHAPE = (96, 128)


@pytest.fixture(scope="module")
def clip():
    """Three frames and their objects: two cells on frames 0 and 1, one on frame 2."""
    images = [make_image(40 + t) for t in range(3)]
    objects = np.stack(
        [
            paint(SHAPE, (3, (30, 30), 12), (7, (60, 90), 10)),
            paint(SHAPE, (1, (33, 34), 12), (2, (58, 86), 10)),
            paint(SHAPE, (5, (36, 38), 12)),
        ]
    )
    return images, objects


# -- SAM2's propagation on the small random model -----------------------------------------


def test_an_object_goes_where_sansa_puts_a_reference_mask_in_the_next_frame(model, clip):
    """Propagating one object is SANSA's run with that object's mask as the reference and
    the next frame as the target (the authors' path, whose logits match theirs)."""
    images, objects = clip
    moved = ns.propagate_objects(model, images, objects, input_size=None)
    assert moved.shape == objects.shape and moved.dtype == objects.dtype
    assert not moved[0].any()
    # frame 2 holds where frame 1's objects (ids 1, 2) went; frame 1: frame 0's (3, 7)
    assert set(np.unique(moved[1])) <= {0, 3, 7}
    assert set(np.unique(moved[2])) <= {0, 1, 2}
    for t, oid in ((1, 3), (1, 7), (2, 1), (2, 2)):
        ref = ns.Reference(images[t - 1], [ns.Mask(objects[t - 1] == oid, label=1)])
        pred = model.segment([ref], [images[t]], input_size=None)[0]
        # kept within three diameters of the object's box in frame t - 1
        rows, cols = np.nonzero(objects[t - 1] == oid)
        grow = int(np.ceil(6 * np.sqrt(len(rows) / np.pi)))
        window = np.zeros(SHAPE, bool)
        window[
            max(rows.min() - grow, 0) : rows.max() + 1 + grow,
            max(cols.min() - grow, 0) : cols.max() + 1 + grow,
        ] = True
        sansa = (pred.logits[1] > 0) & window
        mine = moved[t] == oid
        # where another object's carried mask is higher it takes the pixel
        others = (moved[t] != 0) & ~mine
        assert np.array_equal(mine, sansa & ~others), (t, oid)
        assert mine.any() == sansa.any()


def test_a_carried_mask_is_kept_near_where_its_object_was(model, clip):
    """SANSA's features find look-alikes: only the part of a carried mask within
    ``reach`` of the object's box counts."""
    images, objects = clip
    near = ns.propagate_objects(model, images, objects, input_size=None, reach=1)
    wide = ns.propagate_objects(model, images, objects, input_size=None, reach=500)
    for t in (1, 2):
        for oid in np.unique(objects[t - 1])[1:]:
            rows, cols = np.nonzero(objects[t - 1] == oid)
            box = np.zeros(SHAPE, bool)
            box[
                max(rows.min() - 1, 0) : rows.max() + 2, max(cols.min() - 1, 0) : cols.max() + 2
            ] = True
            assert not ((near[t] == oid) & ~box).any()
    assert (wide > 0).sum() >= (near > 0).sum()
    with pytest.raises(ns.InvalidInputError, match="reach"):
        ns.ObjectPropagation(model, images, reach=0)


def test_features_the_run_already_has_are_not_encoded_again(weights, clip):
    images, objects = clip
    cached = load_test_model(weights)  # the feature cache on, as napari's session has it
    ref = ns.Reference(images[0], [ns.Mask(objects[0] > 0, label=1)])
    cached.segment([ref], images[1:], input_size=None)
    run = ns.ObjectPropagation(cached, images, input_size=None)
    list(run.frames(objects))
    assert (run.encoded, run.reused) == (0, 3)
    # another pre-processing is other features: those are encoded
    run = ns.ObjectPropagation(cached, images, input_size=160)
    list(run.frames(objects))
    assert (run.encoded, run.reused) == (3, 0)
    # no cache: each frame encoded once (kept for the next pair), never twice
    bare = load_test_model(weights, cache_bytes=0)
    run = ns.ObjectPropagation(bare, images, input_size=None)
    list(run.frames(objects))
    assert (run.encoded, run.reused) == (3, 0)


def test_z_stacks_are_carried_plane_by_plane(model, clip):
    images, objects = clip
    stack = np.stack([objects, objects[:, ::-1]], axis=1)  # (T, Z, Y, X)
    planes = [[im, im[::-1]] for im in images]
    moved = ns.propagate_objects(model, planes, stack, input_size=None)
    assert moved.shape == stack.shape
    # each plane is carried on its own images: the same as the planes as time-lapses
    flat = ns.propagate_objects(model, images, objects, input_size=None)
    flipped = [im[::-1] for im in images]
    other = ns.propagate_objects(model, flipped, objects[:, ::-1].copy(), input_size=None)
    assert np.array_equal(moved[:, 0], flat)
    assert np.array_equal(moved[:, 1], other)
    assert not np.array_equal(moved[:, 1], flat[:, ::-1])  # (plane 1 is not plane 0's)


def test_bad_inputs_say_what_to_change(model, clip):
    images, objects = clip
    with pytest.raises(ns.InvalidInputError, match="2 images for 3 frames"):
        ns.propagate_objects(model, images[:2], objects)
    with pytest.raises(ns.InvalidInputError, match=r"\(T, Y, X\) or \(T, Z, Y, X\)"):
        ns.propagate_objects(model, images, objects[0])
    small = [im[:50] for im in images]
    with pytest.raises(ns.InvalidInputError, match="give the images the objects were made"):
        ns.propagate_objects(model, small, objects)
    with pytest.raises(ns.InvalidInputError, match="integer object ids"):
        ns.propagate_objects(model, images, objects.astype(np.float32))
    with pytest.raises(ns.InvalidInputError, match="planes"):
        ns.propagate_objects(model, images, np.stack([objects, objects], axis=1))
    with pytest.raises(ns.InvalidInputError, match="batch"):
        ns.ObjectPropagation(model, images, batch=0)


def test_a_cancelled_propagation_stops_between_frames(model, clip):
    import threading

    images, objects = clip
    stop = threading.Event()
    run = ns.ObjectPropagation(model, images, input_size=None, cancel=stop)
    frames = run.frames(objects)
    t, _ = next(frames)
    stop.set()
    assert t == 2 and list(frames) == []  # (the last pair first)


# -- linking on where SAM2 carried the objects (numpy only) --------------------------------


def test_cells_that_pass_each_other_are_linked_by_where_sam2_carried_them():
    """Two cells swap places between frames: by overlap each takes the other's track;
    by SAM2's carried masks each keeps its own."""
    a, b = (40, 30), (40, 70)
    objects = np.stack([paint(SHAPE, (1, a, 10), (2, b, 10)), paint(SHAPE, (1, b, 10), (2, a, 10))])
    # frame 1's cell at b is frame 0's cell 1 (it moved from a to b), and the reverse
    moved = np.stack([np.zeros(SHAPE, np.uint16), paint(SHAPE, (1, b, 10), (2, a, 10))])
    plain, _ = ns.track_objects(objects)
    carried, table = ns.track_objects(objects, moved=moved)
    at_b = disk(SHAPE, b, 5)
    assert plain[1][at_b].max() == plain[0][disk(SHAPE, b, 5)].max()  # overlap: wrong cell
    assert carried[1][at_b].max() == carried[0][disk(SHAPE, a, 5)].max()  # SAM2: its own
    assert len(table.tracks()) == 2


def test_a_cell_that_jumps_farther_than_its_size_keeps_its_track():
    objects = np.stack([paint(SHAPE, (4, (20, 20), 6)), paint(SHAPE, (9, (70, 100), 6))])
    moved = np.stack([np.zeros(SHAPE, np.uint16), paint(SHAPE, (4, (70, 100), 6))])
    _, plain = ns.track_objects(objects)
    _, carried = ns.track_objects(objects, moved=moved)
    assert len(plain.tracks()) == 2  # too far for the distance rule
    assert len(carried.tracks()) == 1


def test_an_object_sam2_lost_is_linked_where_it_was():
    """An empty carried mask: the object's own overlap links it, beyond max_distance."""
    objects = np.stack([paint(SHAPE, (1, (40, 40), 10)), paint(SHAPE, (1, (44, 47), 10))])
    lost = np.zeros_like(objects)
    _, table = ns.track_objects(objects, moved=lost, max_distance=3)
    assert len(table.tracks()) == 1
    # without the plain overlap (overlap=False) only the centroid counts: too far
    _, table = ns.track_objects(objects, moved=lost, overlap=False, max_distance=3)
    assert len(table.tracks()) == 2


def test_moved_of_other_objects_is_refused():
    objects = np.stack([paint(SHAPE, (1, (40, 40), 10)), paint(SHAPE, (1, (42, 43), 10))])
    wrong = np.stack([np.zeros(SHAPE, np.uint16), paint(SHAPE, (5, (42, 43), 10))])
    with pytest.raises(ns.InvalidInputError, match="moved\\[1\\] holds id 5"):
        ns.track_objects(objects, moved=wrong)
    with pytest.raises(ns.InvalidInputError, match="moved must be integer ids"):
        ns.track_objects(objects, moved=wrong[:1])
    with pytest.raises(ns.InvalidInputError, match="moved must be integer ids"):
        ns.track_objects(objects, moved=wrong.astype(np.float32))


def test_frames_without_objects_are_not_encoded(weights, clip):
    """Frames outside a run's range have no objects: nothing is carried into or out of
    them, so they are never read or encoded."""
    images, objects = clip
    padded = np.concatenate([np.zeros_like(objects[:1]), objects, np.zeros_like(objects[:2])])
    frames = [make_image(90), *images, make_image(91), make_image(92)]
    bare = load_test_model(weights, cache_bytes=0)
    run = ns.ObjectPropagation(bare, frames, input_size=None)
    moved = dict(run.frames(padded))
    assert (run.encoded, run.reused) == (3, 0)  # the three frames with objects, once each
    assert not moved[1].any() and not moved[4].any() and not moved[5].any()
    assert moved[2].any() and moved[3].any()


def test_a_time_lapse_larger_than_the_cache_encodes_only_what_it_no_longer_holds(weights, clip):
    """The pairs are carried from the last back to the first: after a run the cache holds
    the latest frames, used before they could be pushed out."""
    images, objects = clip
    probe = load_test_model(weights)
    ref = ns.Reference(images[0], [ns.Mask(objects[0] > 0, label=1)])
    probe.segment([ref], images[1:], input_size=None)
    each = probe.feature_cache.nbytes // len(probe.feature_cache)
    small = load_test_model(weights, cache_bytes=int(2.5 * each), result_cache_bytes=0)
    small.segment([ref], images[1:], input_size=None)  # the cache keeps frames 1 and 2
    run = ns.ObjectPropagation(small, images, input_size=None)
    order = [t for t, _ in run.frames(objects)]
    assert order == [2, 1]
    assert (run.encoded, run.reused) == (1, 2)


def test_propagate_objects_writes_into_an_array_that_holds_the_ids(model, clip):
    images, objects = clip
    out = np.full(objects.shape, 99, np.uint32)
    moved = ns.propagate_objects(model, images, objects, input_size=None, out=out)
    assert moved is out and not out[0].any()
    with pytest.raises(ns.InvalidInputError, match="holds their ids"):
        ns.propagate_objects(model, images, objects, out=np.zeros(objects.shape, np.uint8))


def test_a_model_view_with_another_feature_cache_leaves_the_model_alone(weights, clip):
    from napari_sansa.core.cache import FeatureCache

    images, _ = clip
    model = load_test_model(weights, result_cache_bytes=0)
    mine = FeatureCache(64 << 20)
    view = model.with_feature_cache(mine)
    assert view.feature_cache is mine and model.feature_cache is not mine
    assert view.engine is model.engine and view.identity == model.identity
    ref = ns.Reference(images[0], [ns.Mask(np.ones(SHAPE, bool), label=1)])
    view.segment([ref], images[1:2], input_size=None)
    assert len(mine) == 2 and len(model.feature_cache) == 0
