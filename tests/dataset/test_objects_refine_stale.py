"""``--refine`` in the CLI and ``segment_dataset``, and the object outputs a later run
without ``--instances`` leaves behind (none of its own targets')."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference, write_targets

import napari_sansa as ns
from conftest import load_test_model, make_image
from napari_sansa.cli import main


@pytest.fixture
def root(tmp_path):
    write_reference(tmp_path)
    write_targets(tmp_path / "data", 2)
    stack = np.stack([make_image(40, rgb=False), make_image(41, rgb=False)])
    tifffile.imwrite(tmp_path / "data" / "movie.tif", stack, photometric="minisblack")
    return tmp_path


def _signature(path) -> str:
    return json.loads(tifffile.TiffFile(path).pages[0].description)["napari_sansa"]["run"]


@pytest.mark.slow
def test_refine_in_the_cli_gives_the_apis_refined_objects(weights, root):
    out = root / "out"
    one = root / "data" / "img1.png"
    # objects of 8 pixels or more: with --min-size 0 the random model's specks made 2500
    # objects, a decoder pass each (50 s); 2x2 tiles of 80 (the refinement picks a tile)
    args = ["--instances", "--min-size", "8", "--tile-size", "80", "--halo", "8"]
    assert main(segment_args(weights, root, *args, "--refine", target=one)) == 0
    objects = tifffile.imread(out / "img1_objects.tif")
    # the API's run with the same settings and the same reference
    model = load_test_model(weights)
    ref_labels = iio.imread(root / "ref_labels.png")
    ref = ns.Reference(iio.imread(root / "ref.png"), [ns.Mask(ref_labels == c, c) for c in (1, 2)])
    image = iio.imread(root / "data" / "img1.png")
    opts = {"min_size": 8, "refine": True}
    (pred,) = model.segment([ref], [image], instances=opts, tile_size=80, halo=8)
    np.testing.assert_array_equal(objects, pred.objects)
    (plain,) = model.segment([ref], [image], instances={"min_size": 8}, tile_size=80, halo=8)
    assert not np.array_equal(plain.objects, pred.objects)  # refinement changed something
    rows = [r for r in read_csv(out / "objects.csv") if r["target"].endswith("img1.png")]
    assert sorted(int(r["area"]) for r in rows) == sorted(pred.object_table["area"].tolist())
    # the option is part of the run's settings: a resume without it is another run
    refined_run = _signature(out / "img1.tif")
    assert main(segment_args(weights, root, *args, target=one)) == 2
    assert _signature(out / "img1.tif") == refined_run  # refused: nothing was written
    # --refine needs --instances, checked before the model loads
    missing = (root / "no-such-sam2.pt", root / "no-such-adapters.pt")
    assert main(segment_args(missing, root, "--refine", out=root / "x")) == 2
    assert not (root / "x").exists()


def test_unrefined_objects_keep_their_run_signature(weights, root, tmp_path):
    """Runs with --instances made before --refine (and 3D objects) existed resume as
    finished, with the default options too."""
    from napari_sansa.dataset.runner import segment_dataset

    model = load_test_model(weights)
    ref_labels = iio.imread(root / "ref_labels.png")
    ref = ns.Reference(iio.imread(root / "ref.png"), [ns.Mask(ref_labels == 1, 1)])
    targets = [root / "data" / "img0.png"]
    # objects per plane: what every run with --instances made before 3D objects
    per_plane = {"dims": "2d"}
    a = segment_dataset(
        targets, [ref], tmp_path / "a", model=model, instances=per_plane, progress=False
    )
    b = segment_dataset(
        targets, [ref], tmp_path / "b", model=model, instances={"refine": True}, progress=False
    )
    assert a.ok and b.ok
    plain = _signature(tmp_path / "a" / "img0.tif")
    assert plain != _signature(tmp_path / "b" / "img0.tif")
    # the signature of an unrefined run is the one its settings always gave
    import hashlib

    from napari_sansa.dataset.references import references_digest

    settings = {
        "model": model.source_identity,  # the identity of the files it was loaded from
        "references": references_digest([ref]),
        "mode": "independent",
        "threshold": 0.5,
        "input_size": 640,
        "intensity_range": None,
        "instances": {"min_size": 10, "seed_distance": 5, "split": "distance"},
    }
    assert plain == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    # the default (3D objects where a stack has a Z axis) resumes such a folder as it is
    again = segment_dataset(targets, [ref], tmp_path / "a", model=model, instances=True)
    assert again.ok and again.skipped == 1 and again.done == 0


def test_overwrite_without_instances_removes_the_earlier_objects(weights, root):
    out = root / "out"
    assert main(segment_args(weights, root, "--instances")) == 0
    names = ("img0", "img1", "movie")
    assert all((out / f"{n}_objects.tif").is_file() for n in names)
    assert {r["target"] for r in read_csv(out / "objects.csv")} == {
        str(root / "data" / f) for f in ("img0.png", "img1.png", "movie.tif")
    }
    # relabelled without --instances: no object image of the earlier run stays
    assert main(segment_args(weights, root, "--overwrite", target=root / "data")) == 0
    for n in names:
        assert not (out / f"{n}_objects.tif").exists(), n
    assert not (out / "objects.csv").exists()  # no object image left: no rows, no file
    assert not (out / ".napari-sansa" / "objects.json").exists()


def test_a_partial_relabelling_keeps_the_other_targets_objects(weights, root):
    out = root / "out"
    assert main(segment_args(weights, root, "--instances")) == 0
    first = read_csv(out / "objects.csv")
    # a person's own file at an object image's name is never removed
    tifffile.imwrite(out / "img1_objects.tif", np.ones((4, 4), np.uint8))
    assert main(segment_args(weights, root, "--overwrite", target=root / "data" / "img0.png")) == 0
    assert not (out / "img0_objects.tif").exists()
    assert np.array_equal(tifffile.imread(out / "img1_objects.tif"), np.ones((4, 4)))
    assert (out / "movie_objects.tif").is_file()
    rows = read_csv(out / "objects.csv")
    movie = str(root / "data" / "movie.tif")
    # img0's rows go (relabelled without objects), img1's too (its object image is not
    # napari-sansa's any more), movie's stay as they were
    assert rows == [r for r in first if r["target"] == movie]
    assert rows
