"""``napari-sansa segment --instances``: object label images and ``objects.csv``."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference, write_targets
from skimage.measure import regionprops

from conftest import make_image
from napari_sansa.cli import main


@pytest.fixture
def root(tmp_path):
    write_reference(tmp_path)
    write_targets(tmp_path / "data", 2)
    stack = np.stack([make_image(40, rgb=False), np.full((96, 128), 7, np.uint8)])
    tifffile.imwrite(tmp_path / "data" / "movie.tif", stack, photometric="minisblack")
    return tmp_path


def _check_against_regionprops(out, rows, name, frame=None):
    """The rows of one target (one frame of a stack) agree with ``regionprops`` on the
    written object image, and every object of the image has its row."""
    objects = tifffile.imread(out / f"{name}_objects.tif")
    labels = tifffile.imread(out / f"{name}.tif")
    if frame is not None:
        objects, labels = objects[frame], labels[frame]
    mine = {int(r["object"]): r for r in rows}
    props = regionprops(objects.astype(np.int64))
    assert sorted(mine) == [p.label for p in props]
    for p in props:
        r = mine[p.label]
        assert int(r["area"]) == p.area
        assert float(r["centroid_row"]) == pytest.approx(p.centroid[0], abs=1e-3)
        assert float(r["centroid_col"]) == pytest.approx(p.centroid[1], abs=1e-3)
        box = [int(r[k]) for k in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")]
        assert box == list(p.bbox)
        assert int(r["class"]) == int(np.bincount(labels[objects == p.label]).argmax())
        assert 0.0 <= float(r["mean_probability"]) <= 1.0


def test_instances_write_object_images_and_a_csv_that_regionprops_agrees_with(weights, root):
    out = root / "out"
    assert main(segment_args(weights, root, "--instances", "--min-size", "3")) == 0
    rows = read_csv(out / "objects.csv")
    assert list(rows[0]) == [
        "target", "frame", "object", "class", "area", "centroid_row", "centroid_col",
        "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_probability",
    ]  # fmt: skip
    by_target: dict = {}
    for r in rows:
        by_target.setdefault((r["target"], r["frame"]), []).append(r)
    for i in range(2):
        src = str(root / "data" / f"img{i}.png")
        assert by_target.get((src, "")), "the random model labels some pixels of each image"
        _check_against_regionprops(out, by_target[(src, "")], f"img{i}")
    movie = str(root / "data" / "movie.tif")
    _check_against_regionprops(out, by_target.get((movie, "0"), []), "movie", frame=0)
    # the constant frame has no foreground: no objects, no rows, no error
    assert (movie, "1") not in by_target
    stack = tifffile.imread(out / "movie_objects.tif")
    assert stack.shape == (2, 96, 128) and not stack[1].any()
    # ids are unique within the stack: frame 1's would follow frame 0's
    assert stack.dtype.kind == "u" and stack.dtype.itemsize >= 2
    ids = [int(r["object"]) for r in rows if r["target"] == movie]
    assert len(ids) == len(set(ids))
    assert np.array_equal(np.unique(stack[stack > 0]), sorted(ids))
    # the options are part of the run's settings; a plain run elsewhere has no objects
    assert main(segment_args(weights, root, "--instances", "--min-size", "4")) == 2
    assert main(segment_args(weights, root, out=root / "plain")) == 0
    assert not (root / "plain" / "objects.csv").exists()
    assert not list((root / "plain").rglob("*_objects.tif"))
    assert "_objects" not in "".join(r["output"] for r in read_csv(root / "plain" / "scores.csv"))


def test_resume_redoes_missing_objects_and_keeps_the_csv_complete(weights, root):
    out = root / "out"
    args = segment_args(weights, root, "--instances")
    assert main(args) == 0
    first = read_csv(out / "objects.csv")
    scores = read_csv(out / "scores.csv")
    assert all("_objects" not in r["output"] for r in scores)  # objects are not score rows
    (out / "img1_objects.tif").unlink()  # an interrupted run: labels there, objects not
    before = (out / "img0.tif").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "img1_objects.tif").is_file()
    assert (out / "img0.tif").stat().st_mtime_ns == before  # finished: not redone
    assert read_csv(out / "objects.csv") == first
    assert len(read_csv(out / "scores.csv")) == len(scores)
    # a second run with other targets keeps the earlier rows
    more = write_targets(root / "more", 1, seed=30, name="new{}.png")
    assert main(segment_args(weights, root, "--instances", target=more)) == 0
    rows = read_csv(out / "objects.csv")
    assert [r for r in rows if "new0" not in r["target"]] == first
    assert any("new0" in r["target"] for r in rows)


def test_a_users_objects_csv_is_never_replaced(weights, root):
    out = root / "out"
    out.mkdir()
    (out / "objects.csv").write_text("my,own\n1,2\n")
    assert main(segment_args(weights, root, "--instances")) == 2
    assert (out / "objects.csv").read_text() == "my,own\n1,2\n"
    assert not (out / "img0.tif").exists()  # refused before anything was written
    # nor a file of an object image's name
    (out / "objects.csv").unlink()
    tifffile.imwrite(out / "img1_objects.tif", np.ones((4, 4), np.uint8))
    assert main(segment_args(weights, root, "--instances")) == 2
    assert np.array_equal(tifffile.imread(out / "img1_objects.tif"), np.ones((4, 4)))
    assert not (out / "img0.tif").exists()
    (out / "objects.csv").write_text("my,own\n1,2\n")
    # without --instances that file is not napari-sansa's business
    assert main(segment_args(weights, root)) == 0
    assert (out / "objects.csv").read_text() == "my,own\n1,2\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instances", "--min-size", "-1"], "min_size must be >= 0"),
        (["--instances", "--seed-distance", "0"], "seed_distance must be >= 1"),
        (["--min-size", "5"], "give --instances"),
    ],
)
def test_bad_object_options_exit_2_before_the_model_loads(root, capsys, extra, message):
    missing = (root / "no-such-sam2.pt", root / "no-such-adapters.pt")  # never read
    assert main(segment_args(missing, root, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (root / "out").exists()


def test_dask_run_writes_the_same_objects_as_a_local_run(weights, root):
    distributed = pytest.importorskip("dask.distributed")
    local = segment_args(weights, root, "--instances", "--min-size", "3", out=root / "local")
    assert main(local) == 0
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env={"OMP_NUM_THREADS": "1"},
    ) as cluster:  # fmt: skip
        dist = segment_args(weights, root, "--instances", "--min-size", "3", out=root / "dist")
        assert main([*dist, "--scheduler", cluster.scheduler_address, "--chunk-size", "1"]) == 0
    csv = [(root / f / "objects.csv").read_text() for f in ("local", "dist")]
    assert csv[0] == csv[1] and len(csv[0].splitlines()) > 1
    for name in ("img0_objects.tif", "img1_objects.tif", "movie_objects.tif"):
        assert np.array_equal(
            tifffile.imread(root / "local" / name), tifffile.imread(root / "dist" / name)
        )
