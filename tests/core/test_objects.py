"""Objects: a class map split into one id per object, and the table of measurements."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from synthetic_objects import matching_f1, touching_shapes

import napari_sansa as ns
from napari_sansa.core.objects import ObjectOptions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_touching_disks_and_ellipses_are_separated(seed):
    truth, classes = touching_shapes(seed)
    objects = ns.split_objects(classes, min_size=0)
    plain = ns.split_objects(classes, min_size=0, split="none")
    f1, f1_plain = matching_f1(truth, objects), matching_f1(truth, plain)
    print(f"seed {seed}: F1 split {f1:.3f}, connected components {f1_plain:.3f}")
    assert f1 >= 0.95
    assert f1_plain < 0.5  # the set really has touching objects of one class
    # every object lies in one class, and the objects cover the class map
    assert np.array_equal(objects > 0, classes > 0)
    for i in range(1, int(objects.max()) + 1):
        assert len(np.unique(classes[objects == i])) == 1


def test_ids_are_stable_and_ordered():
    _, classes = touching_shapes(3)
    a = ns.split_objects(classes)
    b = ns.split_objects(classes.copy())
    assert np.array_equal(a, b)
    assert a.dtype == np.uint16
    ids = np.unique(a[a > 0])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    # class 1's objects first, then class 2's; within a class, raster order of first pixel
    cls = np.array([classes[a == i][0] for i in ids])
    assert np.all(np.diff(cls) >= 0)
    flat = a.ravel()
    first = np.array([np.flatnonzero(flat == i)[0] for i in ids])
    for c in (1, 2):
        assert np.all(np.diff(first[cls == c]) > 0)


def test_min_size_and_seed_distance():
    cmap = np.zeros((60, 80), np.uint8)
    cmap[5:8, 5:8] = 1  # 9 pixels
    yy, xx = np.mgrid[:60, :80]
    two = ((yy - 30) ** 2 + (xx - 25) ** 2 < 12**2) | ((yy - 30) ** 2 + (xx - 47) ** 2 < 12**2)
    cmap[two] = 1
    assert ns.split_objects(cmap, min_size=0).max() == 3
    kept = ns.split_objects(cmap, min_size=10)
    assert kept.max() == 2 and not kept[5:8, 5:8].any()
    # seeds at least 30 px apart: the two disks (22 px apart) stay one object
    assert ns.split_objects(cmap, min_size=10, seed_distance=30).max() == 1
    with pytest.raises(ns.InvalidInputError, match="min_size must be >= 0"):
        ns.split_objects(cmap, min_size=-1)
    with pytest.raises(ns.InvalidInputError, match="seed_distance"):
        ns.split_objects(cmap, seed_distance=0)
    with pytest.raises(ns.InvalidInputError, match="unknown split"):
        ns.split_objects(cmap, split="magic")


def test_probability_split_follows_the_bumps():
    yy, xx = np.mgrid[:40, :80]
    cmap = np.zeros((40, 80), np.uint8)
    cmap[10:30, 10:70] = 1  # one rectangle: its distance transform has no two maxima
    prob = np.exp(-((yy - 20) ** 2 + (xx - 25) ** 2) / 80) + np.exp(
        -((yy - 20) ** 2 + (xx - 55) ** 2) / 80
    )
    by_prob = ns.split_objects(cmap, {1: prob}, split="probability", seed_distance=10)
    assert by_prob.max() == 2
    assert by_prob[20, 25] != by_prob[20, 55]
    with pytest.raises(ns.InvalidInputError, match="needs the probabilities"):
        ns.split_objects(cmap, split="probability")
    with pytest.raises(ns.InvalidInputError, match="shape"):
        ns.split_objects(cmap, {1: prob[:10]}, split="probability")


def test_more_objects_than_uint16_get_a_wider_dtype():
    cmap = np.zeros((520, 520), np.uint8)
    cmap[::2, ::2] = 1  # 260 x 260 = 67600 separate pixels
    objects = ns.split_objects(cmap, min_size=0, split="none")
    assert objects.dtype == np.uint32
    assert objects.max() == 67600
    assert len(np.unique(objects)) == 67601  # never wrapped: every id once, and 0


def test_object_table_agrees_with_regionprops():
    from skimage.measure import regionprops

    _, classes = touching_shapes(4)
    rng = np.random.default_rng(0)
    probs = {c: rng.random(classes.shape).astype(np.float32) for c in (1, 2)}
    objects = ns.split_objects(classes)
    table = ns.object_table(objects, classes, probs)
    props = regionprops(objects.astype(np.int64))
    assert len(table) == len(props) == objects.max()
    for i, rp in enumerate(props):
        assert table["object"][i] == rp.label
        assert table["area"][i] == rp.area
        assert table["centroid_row"][i] == pytest.approx(rp.centroid[0])
        assert table["centroid_col"][i] == pytest.approx(rp.centroid[1])
        box = [table[f"bbox_{k}"][i] for k in ("min_row", "min_col", "max_row", "max_col")]
        assert box == list(rp.bbox)
        c = table["class"][i]
        assert c == classes[tuple(rp.coords[0])]
        expect = probs[c][tuple(rp.coords.T)].mean()
        assert table["mean_probability"][i] == pytest.approx(expect, rel=1e-5)


def test_csv_columns_and_values(tmp_path):
    _, classes = touching_shapes(5, shape=(128, 128), n=10)
    objects = ns.split_objects(classes)
    table = ns.object_table(objects, classes)  # no probabilities: NaN
    path = tmp_path / "objects.csv"
    table.to_csv(path, extra={"image": "a.tif"})
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(rows[0]) == ["image", *ns.ObjectTable.columns]
    assert len(rows) == len(table)
    for i, row in enumerate(rows):
        assert row["image"] == "a.tif"
        assert int(row["object"]) == table["object"][i]
        assert int(row["area"]) == table["area"][i]
        assert float(row["centroid_row"]) == pytest.approx(table["centroid_row"][i], rel=1e-5)
        assert row["mean_probability"] == "nan"
    assert table.to_csv() == path.read_text().replace("image,", "", 1).replace("a.tif,", "")
    frame = table.to_pandas()
    assert list(frame.columns) == list(ns.ObjectTable.columns)


def test_no_foreground_gives_an_empty_table():
    empty = np.zeros((30, 40), np.uint8)
    objects = ns.split_objects(empty)
    assert objects.shape == (30, 40) and not objects.any()
    table = ns.object_table(objects, empty)
    assert len(table) == 0 and list(table.as_dict()) == list(ns.ObjectTable.columns)
    assert table.to_csv().strip() == ",".join(ns.ObjectTable.columns)


def test_bad_class_maps():
    with pytest.raises(ns.InvalidInputError, match="2D .* or 3D"):
        ns.split_objects(np.zeros((2, 2, 3, 4), np.uint8))
    with pytest.raises(ns.InvalidInputError, match="integer class ids"):
        ns.split_objects(np.zeros((5, 5), np.float32))
    with pytest.raises(ns.InvalidInputError, match="negative"):
        ns.split_objects(-np.ones((5, 5), np.int32))
    with pytest.raises(ns.InvalidInputError, match="shape of the class map"):
        ns.object_table(np.zeros((4, 4), np.uint16), np.zeros((5, 5), np.uint8))


def test_prediction_objects_and_instances_option(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask, label=1)])
    plain = model.segment([ref], images[1:3])
    split = model.segment([ref], images[1:3], instances={"min_size": 0, "seed_distance": 3})
    for a, b in zip(plain, split, strict=True):
        assert b.object_options == ObjectOptions(min_size=0, seed_distance=3)
        expect = ns.split_objects(a.labels, min_size=0, seed_distance=3)
        assert np.array_equal(b.objects, expect)
        assert len(b.object_table) == int(expect.max())
        assert np.array_equal(b.object_table["class"], np.ones(len(b.object_table), int))
        # a new threshold keeps the options
        assert b.with_threshold(0.7).object_options == b.object_options
    # the objects of a prediction without options use the defaults
    assert np.array_equal(plain[0].objects, ns.split_objects(plain[0].labels))
    with pytest.raises(ns.InvalidInputError, match="instances must be"):
        model.segment([ref], images[1:2], instances="yes")
    with pytest.raises(ns.InvalidInputError, match="unknown instance options"):
        model.segment([ref], images[1:2], instances={"size": 3})


def test_instances_on_a_frame_with_no_foreground():
    from napari_sansa.core.model import Prediction

    pred = Prediction(0, {1: np.full((20, 30), -10.0, np.float32)}, {1: 0.5})
    assert not pred.objects.any()
    assert len(pred.object_table) == 0


def test_a_stack_has_ids_unique_across_frames_and_a_frame_column():
    from napari_sansa.core.model import Prediction

    frames = []
    for seed in (6, 7, 8):
        _, classes = touching_shapes(seed, shape=(96, 96), n=8)
        logits = {c: np.where(classes == c, 10.0, -10.0).astype(np.float32) for c in (1, 2)}
        frames.append(Prediction(seed, logits, {1: 1.0, 2: 1.0}))
    empty = Prediction(
        9,
        {1: np.full((96, 96), -10.0, np.float32), 2: np.full((96, 96), -10.0, np.float32)},
        {1: 0.0, 2: 0.0},
    )
    stack, table = ns.stack_objects([frames[0], empty, *frames[1:]])
    assert stack.shape == (4, 96, 96) and not stack[1].any()
    assert table.columns[0] == "frame" and len(table) == int(stack.max())
    ids = np.unique(stack[stack > 0])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # unique in the stack
    for f, p in zip((0, 2, 3), frames, strict=True):
        rows = table["frame"] == f
        assert np.array_equal(np.unique(stack[f][stack[f] > 0]), table["object"][rows])
        assert np.array_equal(table["area"][rows], p.object_table["area"])
    assert sum(table.counts().values()) == len(table)
    # the same from (objects, table) pairs, as a worker sends them frame by frame
    again, table2 = ns.stack_objects([(p.objects, p.object_table) for p in (frames[0], empty)])
    assert np.array_equal(again, stack[:2]) and len(table2) == int(stack[0].max())
    assert table.to_csv().splitlines()[0].startswith("frame,object,class")
    with pytest.raises(ns.InvalidInputError, match="different shapes"):
        ns.stack_objects([frames[0], Prediction(0, {1: np.zeros((5, 5), np.float32)}, {1: 0.0})])


def test_object_table_in_blocks_of_rows_and_mixed_objects(monkeypatch):
    from napari_sansa.core import measures as mod

    _, classes = touching_shapes(9, shape=(120, 90), n=15)
    rng = np.random.default_rng(1)
    probs = {c: rng.random(classes.shape).astype(np.float32) for c in (1, 2)}
    objects = ns.split_objects(classes)
    whole = ns.object_table(objects, classes, probs)
    monkeypatch.setattr(mod, "BLOCK_PIXELS", 7 * 90 + 5)  # blocks of 7 rows
    blocks = ns.object_table(objects, classes, probs)
    for c in ns.ObjectTable.columns:
        assert np.allclose(whole[c], blocks[c], rtol=1e-12, equal_nan=True), c
    # an object whose pixels have two classes takes the most frequent one
    cmap = np.zeros((10, 10), np.uint8)
    cmap[:, :6], cmap[:, 6:] = 2, 1
    one = np.ones((10, 10), np.uint16)
    table = ns.object_table(one, cmap, {1: np.full((10, 10), 0.2), 2: np.full((10, 10), 0.8)})
    assert table["class"].tolist() == [2] and table["area"].tolist() == [100]
    assert table["mean_probability"][0] == pytest.approx(0.8)


def test_refine_objects_by_box_prompts_reuses_the_features(model, images, disk_mask, monkeypatch):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask, label=1)])
    target = images[1]
    (pred,) = model.segment([ref], [target], instances={"min_size": 0})
    assert len(pred.object_table) > 0
    calls = []
    encode = model.engine.encode
    monkeypatch.setattr(model.engine, "encode", lambda x: calls.append(x) or encode(x))
    refined, table = ns.refine_objects(model, target, pred)
    assert calls == []  # the target's features came from the cache: no second encoding
    assert refined.shape == pred.objects.shape and refined.dtype == pred.objects.dtype
    assert set(np.unique(refined)) <= set(np.unique(pred.objects))  # ids kept
    assert not (refined[pred.labels == 0]).any()  # nothing outside the class map
    for i in np.unique(refined[refined > 0]):
        assert len(np.unique(pred.labels[refined == i])) == 1
    assert len(table) == len(np.unique(refined[refined > 0]))
    # the same inputs, the same result
    again, _ = ns.refine_objects(model, target, pred, batch=1)
    assert np.array_equal(again, refined)
    with pytest.raises(ns.InvalidInputError, match="the image the prediction was made from"):
        ns.refine_objects(model, images[2][:50], pred)
