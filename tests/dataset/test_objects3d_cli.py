"""``napari-sansa segment --instances`` on z-stacks: 3D objects, per plane on request,
the voxel size (given or from the TIFF's metadata), and folders labelled per plane
before keep resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, segment_args, write_reference, write_targets
from skimage.measure import regionprops

import napari_sansa as ns
from conftest import make_image
from napari_sansa.cli import main
from napari_sansa.dataset.outputs import read_record
from napari_sansa.dataset.voxels import voxel_size_of


def _stack(seed=40):
    planes = [make_image(seed + k, rgb=False) for k in range(6)]
    return np.stack(planes).reshape(2, 3, 96, 128)  # T, Z


@pytest.fixture
def root(tmp_path):
    write_reference(tmp_path)
    write_targets(tmp_path / "data", 1)
    tifffile.imwrite(
        tmp_path / "data" / "nuclei.tif",
        _stack(),
        imagej=True,
        resolution=(2.0, 2.0),  # 0.5 um pixels
        metadata={"axes": "TZYX", "spacing": 2.0, "unit": "um"},
    )
    return tmp_path


@pytest.mark.slow
def test_a_tz_stack_gets_3d_objects_per_time_point_with_its_metadata_voxel_size(weights, root):
    out = root / "out"
    assert main(segment_args(weights, root, "--instances", "--min-size", "0")) == 0
    labels = tifffile.imread(out / "nuclei.tif")
    objects = tifffile.imread(out / "nuclei_objects.tif")
    assert objects.shape == labels.shape == (2, 3, 96, 128)
    info = read_record(out / "nuclei_objects.tif")
    assert info["voxel_size"] == {
        "spacing": [2.0, 0.5, 0.5],
        "unit": "µm",
        "source": "ImageJ metadata",
    }
    rows = [r for r in read_csv(out / "objects.csv") if r["target"].endswith("nuclei.tif")]
    assert rows, "the random model labels some pixels of the stack"
    offset = 0
    for t in range(2):
        # each time point split in 3D with the metadata's voxel size, ids after t - 1's
        expect = ns.split_objects(labels[t], min_size=0, spacing=(2.0, 0.5, 0.5))
        fg = expect > 0
        assert np.array_equal(objects[t][fg], expect[fg].astype(np.int64) + offset)
        assert not objects[t][~fg].any()
        mine = {int(r["object"]): r for r in rows if r["t"] == str(t)}
        props = regionprops(objects[t].astype(np.int64))
        assert sorted(mine) == [p.label for p in props]
        for p in props:
            r = mine[p.label]
            assert r["frame"] == "" and int(r["volume"]) == p.area
            assert float(r["physical_volume"]) == pytest.approx(p.area * 0.5, rel=1e-5)
            centroid = [float(r[f"centroid_{a}"]) for a in ("z", "row", "col")]
            assert centroid == pytest.approx(list(p.centroid), abs=1e-3)
            box = [int(r[f"bbox_{m}_{a}"]) for m in ("min", "max") for a in ("z", "row", "col")]
            assert box == list(p.bbox)
        offset += int(expect.max())
    # objects that span planes keep one id across them
    assert any(r["bbox_max_z"] != str(int(r["bbox_min_z"]) + 1) for r in rows)
    # the image in the same folder keeps its 2D rows (area), the 3D ones are empty there
    image = [r for r in read_csv(out / "objects.csv") if r["target"].endswith("img0.png")]
    assert image and all(r["area"] and not r["volume"] and not r["t"] for r in image)
    settings = json.loads((out / ".napari-sansa" / "run.json").read_text())["settings"]
    assert settings["instances"]["dims"] == "3d"


@pytest.mark.slow
def test_objects_per_plane_and_a_given_voxel_size(weights, root):
    out = root / "plane"
    args = segment_args(weights, root, "--instances", "--objects-per-plane", out=out)
    assert main(args) == 0
    labels = tifffile.imread(out / "nuclei.tif")
    objects = tifffile.imread(out / "nuclei_objects.tif")
    frames = [ns.split_objects(labels[t, z]) for t in range(2) for z in range(3)]
    stacked, _ = ns.stack_objects([(f, ns.object_table(f, f)) for f in frames])
    assert np.array_equal(objects.reshape(6, 96, 128), stacked)  # as before 3D objects
    rows = read_csv(out / "objects.csv")
    assert "volume" not in rows[0] and {r["frame"] for r in rows} > {""}
    # a voxel size given wins over the metadata's
    given = root / "given"
    args = segment_args(weights, root, "--instances", "--voxel-size", "4,1,1", out=given)
    assert main(args) == 0
    assert read_record(given / "nuclei_objects.tif")["voxel_size"]["source"] == "given"
    labels = tifffile.imread(given / "nuclei.tif")
    expect = ns.split_objects(labels[0], spacing=(4, 1, 1))
    assert np.array_equal(tifffile.imread(given / "nuclei_objects.tif")[0], expect)


@pytest.mark.slow
def test_a_folder_labelled_per_plane_before_resumes_per_plane(weights, root, capsys):
    out = root / "out"
    # objects per plane record what runs before 3D objects recorded (see the core test)
    assert main(segment_args(weights, root, "--instances", "--objects-per-plane")) == 0
    before = read_csv(out / "objects.csv")
    (out / "nuclei_objects.tif").unlink()  # an interrupted run
    capsys.readouterr()
    assert main(segment_args(weights, root, "--instances")) == 0  # not refused
    assert "per plane by an earlier run" in capsys.readouterr().err
    assert read_csv(out / "objects.csv") == before  # redone per plane: nothing mixed
    assert "dims" not in read_record(out / "nuclei_objects.tif")["objects"]
    # --overwrite redoes the folder in 3D
    assert main(segment_args(weights, root, "--instances", "--overwrite")) == 0
    assert read_record(out / "nuclei_objects.tif")["objects"]["dims"] == "3d"
    # and then objects per plane there are refused (another run's results), not mixed
    assert main(segment_args(weights, root, "--instances", "--objects-per-plane")) == 2
    assert read_record(out / "nuclei_objects.tif")["objects"]["dims"] == "3d"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instances", "--voxel-size", "0,1,1"], "positive"),
        (["--instances", "--voxel-size", "2,-0.5,0.5"], "positive"),
        (["--instances", "--voxel-size", "nan,1,1"], "positive"),
        (["--instances", "--voxel-size", "1,1"], "3 numbers"),
        (["--instances", "--voxel-size", "a,b,c"], "3 numbers"),
        (["--voxel-size", "2,1,1"], "--voxel-size split objects: give --instances"),
        (["--objects-per-plane"], "--objects-per-plane split objects: give --instances"),
    ],
)
def test_a_bad_voxel_size_exits_2_before_the_model_loads(root, capsys, extra, message):
    missing = (root / "no-such-sam2.pt", root / "no-such-adapters.pt")  # never read
    assert main(segment_args(missing, root, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (root / "out").exists()


def test_voxel_size_from_ome_tiff_and_none(tmp_path):
    a = np.zeros((3, 8, 8), np.uint8)
    meta = {"axes": "ZYX", "PhysicalSizeZ": 3.0, "PhysicalSizeY": 0.4, "PhysicalSizeX": 0.4}
    tifffile.imwrite(tmp_path / "ome.tif", a, ome=True, metadata=meta)
    found = voxel_size_of(tmp_path / "ome.tif")
    assert found.spacing == (3.0, 0.4, 0.4) and found.source == "OME-TIFF metadata"
    tifffile.imwrite(tmp_path / "plain.tif", a, photometric="minisblack")
    assert voxel_size_of(tmp_path / "plain.tif") is None
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    assert voxel_size_of(tmp_path / "broken.tif") is None


def test_3d_objects_of_a_tz_stack_widen_and_follow_the_previous_time_point(tmp_path):
    """The scratch-file path of a stack's 3D objects, without a model: time point 1 has
    more objects than uint16 holds, so the object stack widens (never wraps), and its
    ids follow time point 0's."""
    from types import SimpleNamespace

    from napari_sansa.core.measures import object_table
    from napari_sansa.core.objects import ObjectOptions
    from napari_sansa.dataset.discovery import Target
    from napari_sansa.dataset.outputs import TiffWriter
    from napari_sansa.dataset.records import table_record
    from napari_sansa.dataset.stacks import _Scratch, _StackObjects3D, z_volumes

    t_, z_, h, w = 2, 2, 364, 364
    stack = SimpleNamespace(frame_axes="TZ", frame_sizes=(t_, z_))
    volumes = z_volumes(stack)
    assert [at for at, _ in volumes] == [{"t": 0}, {"t": 1}]
    assert volumes[1][1].tolist() == [2, 3]
    labels = np.zeros((t_, z_, h, w), np.uint8)
    labels[0, 0:2, 10:20, 10:20] = 1  # one object across two planes
    labels[1, 0, ::2, ::2] = 2  # 182 x 182 = 33124 separate voxels ...
    labels[1, 1, 1::2, 1::2] = 2  # ... and as many: 66248 objects, more than uint16 holds
    target = Target("s.tif", "s.tif", "stack", t_ * z_)
    objects = _StackObjects3D(
        _Scratch(tmp_path, target), t_ * z_, (h, w), volumes, np.uint8, [1, 2]
    )
    for f in range(t_ * z_):
        pred = SimpleNamespace(probabilities={c: np.full((h, w), 0.5, np.float32) for c in (1, 2)})
        objects.take(f, pred, labels.reshape(-1, h, w)[f])
    objects.split(ObjectOptions(min_size=0, split="none"))

    def record(role, table):
        return {"output": role, "objects": table_record(table)}

    objects.write(target, tmp_path, (t_, z_, h, w), "TZYX", record)
    written = tifffile.imread(tmp_path / "s_objects.tif")
    assert written.dtype == np.uint32 and written.shape == (t_, z_, h, w)
    assert np.unique(written[0]).tolist() == [0, 1]  # one id across its planes
    assert written[1].max() == 66249 and written[1][written[1] > 0].min() == 2
    assert len(np.unique(written[1])) == 66249  # never wrapped
    info = TiffWriter.read_record(tmp_path / "s_objects.tif")
    assert info["objects"]["dims"] == "3d" and info["voxel_size"] is None
    columns = info["objects"]["columns"]
    assert columns[:4] == ["t", "object", "class", "volume"]
    first = dict(zip(columns, info["objects"]["rows"][0], strict=True))
    assert first["t"] == 0 and first["volume"] == 200 and first["bbox_max_z"] == 2
    assert first["mean_probability"] == pytest.approx(0.5)
    expect = object_table(written[0], labels[0])
    assert first["centroid_z"] == pytest.approx(expect["centroid_z"][0])
