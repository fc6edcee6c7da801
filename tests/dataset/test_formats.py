"""Microscopy formats as targets and references: OME-Zarr (NGFF 0.4, 0.5) through zarr,
vendor files through bioio (OME-TIFF read by bioio; CZI plugins by stand-ins: no CZI,
ND2 or LIF file can be made here), and the bad inputs around them."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import cli_model_args, make_image
from napari_sansa.cli import main
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset import discover_targets, load_reference_pair
from napari_sansa.dataset.io import read_label_image, read_target
from napari_sansa.dataset.readers import image_info, open_stack

zarr = pytest.importorskip("zarr")
ome_writer = pytest.importorskip("ome_zarr.writer")
ome_format = pytest.importorskip("ome_zarr.format")

H, W = 48, 64
NAMES = ["DAPI", "GFP", "RFP"]


def _tczyx(seed=0, t=2, z=2):
    """A TCZYX uint16 image of 3 channels: smooth blobs (each channel its own)."""
    planes = [make_image(seed + k, shape=(H, W), rgb=False) for k in range(t * 3 * z)]
    return (np.stack(planes).reshape(t, 3, z, H, W).astype(np.uint16) * 200).astype(np.uint16)


def _write_omezarr(path, data, axes="tczyx", version="0.5", chunks=None, levels=(2,)):
    """``data`` as an OME-Zarr image written by ome-zarr's writer (channels named)."""
    fmt = ome_format.FormatV04() if version == "0.4" else ome_format.FormatV05()
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    scale = {"z": 2.0, "y": 0.5, "x": 0.5}
    units = dict.fromkeys("zyx", "micrometer")
    metadata = {}
    if "c" in axes:
        n = data.shape[axes.index("c")]
        metadata = {"omero": {"channels": [{"label": NAMES[k]} for k in range(n)]}}
    ome_writer.write_image(
        data,
        root,
        axes=axes,
        fmt=fmt,
        scale_factors=levels,
        storage_options={"chunks": chunks or (1,) * (data.ndim - 2) + (16, 32)},
        scale={a: s for a, s in scale.items() if a in axes},
        axes_units={a: u for a, u in units.items() if a in axes},
        metadata=metadata,
    )
    return path


def _labels(path, shape=(H, W)):
    lab = np.zeros(shape, np.uint8)
    lab[8:30, 10:40] = 1
    iio.imwrite(path, lab)
    return path


def _gray_reference(root):
    iio.imwrite(root / "ref.png", make_image(0, shape=(H, W), rgb=False))
    return ["-r", str(root / "ref.png"), str(_labels(root / "ref_labels.png"))]


# -- OME-Zarr read ------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_omezarr_axes_channels_and_pixel_sizes_come_from_its_metadata(tmp_path, version):
    data = _tczyx()
    path = _write_omezarr(tmp_path / "scan.ome.zarr", data, version=version)
    info = image_info(path)
    assert info.format == f"OME-Zarr {version}"
    assert info.axes == "TCZYX" and info.shape == data.shape
    assert info.channel_names == NAMES
    assert info.pixel_sizes == {"Z": 2.0, "Y": 0.5, "X": 0.5}
    with open_stack(path, channels=(1,)) as stack:
        assert stack.frame_axes == "TZ" and stack.frame_sizes == (2, 2) and len(stack) == 4
        assert stack.label_axes == "TZYX" and stack.frame_shape == (H, W)
        for i in range(4):
            t, z = stack.index(i)
            np.testing.assert_array_equal(stack[i], data[t, 1, z])
        # a window reads only its pixels, channels made as for the whole frame
        np.testing.assert_array_equal(stack.window(3)[5:20, 7:50], data[1, 1, 1, 5:20, 7:50])
    with open_stack(path, channels=(2, 0)) as stack:  # two channels: red, green, blue zeros
        rgb = stack.window(0)[10:30, 20:60]
        np.testing.assert_array_equal(rgb[..., 0], data[0, 2, 0, 10:30, 20:60])
        np.testing.assert_array_equal(rgb[..., 1], data[0, 0, 0, 10:30, 20:60])
        assert not rgb[..., 2].any()
    # --axes overrides what the metadata says (here: C and Z swapped)
    with open_stack(path, axes="TZCYX") as stack:
        assert stack.frame_sizes == (2, 3) and stack.n_channels == 2
    assert read_target(path)[0] == "stack" and read_target(path)[1] == 4


def test_3d_objects_take_an_omezarr_voxel_size_from_its_metadata(tmp_path):
    from napari_sansa.dataset.voxels import voxel_size_of

    path = _write_omezarr(tmp_path / "scan.ome.zarr", _tczyx())
    size = voxel_size_of(path)
    assert size.spacing == (2.0, 0.5, 0.5) and size.unit == "µm"
    assert size.source == "OME-Zarr metadata"
    flat = _write_omezarr(tmp_path / "flat.ome.zarr", _tczyx()[:, :, 0], axes="tcyx")
    assert voxel_size_of(flat) is None  # no Z size: cubic voxels, said in the log


def test_a_zarr_folder_is_one_target_never_walked_into(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_omezarr(data / "a.ome.zarr", _tczyx(t=1, z=1)[:, :, 0], axes="tcyx")
    # a store not named .zarr is known by its metadata file
    _write_omezarr(data / "b", make_image(1, shape=(H, W), rgb=False), axes="yx")
    (data / "a.ome.zarr" / "stray.png").write_bytes(b"")  # inside a store: not a target
    iio.imwrite(data / "c.png", make_image(2, shape=(H, W)))
    targets = discover_targets(data, tmp_path / "out")
    found = {t.source.rsplit("/", 1)[-1]: t for t in targets}
    assert sorted(found) == ["a.ome.zarr", "b", "c.png"]
    assert found["a.ome.zarr"].output == "a.ome.tif" and found["a.ome.zarr"].kind == "tiff"
    assert found["b"].output == "b.tif"
    # given itself, a store is one target too
    (t,) = discover_targets(data / "a.ome.zarr", tmp_path / "out")
    assert t.output == "a.ome.tif"


def test_cli_labels_an_omezarr_stack_in_a_folder_that_mixes_formats(weights, tmp_path):
    """A TCZYX OME-Zarr of 3 channels next to a PNG and a TIFF stack: the store gives a
    TZYX label stack of the chosen channel, the others as before; the reference is an
    OME-Zarr too; a second run redoes nothing (the store's state is recorded)."""
    from dataset_files import read_csv

    data = tmp_path / "data"
    data.mkdir()
    scan = _tczyx(seed=3)
    _write_omezarr(data / "scan.ome.zarr", scan)
    iio.imwrite(data / "photo.png", make_image(7, shape=(H, W), rgb=False))
    tifffile.imwrite(data / "t.tif", scan[:, :, 0], imagej=True, metadata={"axes": "TCYX"})
    ref = _write_omezarr(tmp_path / "ref.ome.zarr", scan[0, :, 0], axes="cyx", version="0.4")
    out = tmp_path / "out"
    args = ["segment", str(data), "-r", str(ref), str(_labels(tmp_path / "ref_labels.png"))]
    args += ["--out", str(out), "--channels", "1", *cli_model_args(weights)]
    assert main(args) == 0
    rows = [(r["target"].rsplit("/", 1)[-1], r["status"]) for r in read_csv(out / "scores.csv")]
    assert (
        sorted(rows)
        == [("photo.png", "ok")] + [("scan.ome.zarr", "ok")] * 4 + [("t.tif", "ok")] * 2
    )
    with tifffile.TiffFile(out / "scan.ome.tif") as tif:
        labels = tif.asarray()
        assert labels.shape == (2, 2, H, W) and tif.series[0].axes.upper().endswith("YX")
    # frame (t=0, z=0) of the store's channel 1 is the TIFF's frame 0: the same labels
    np.testing.assert_array_equal(labels[:, 0], tifffile.imread(out / "t.tif"))
    before = (out / "scan.ome.tif").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "scan.ome.tif").stat().st_mtime_ns == before  # finished: not redone


def test_a_one_frame_omezarr_by_tiles_gives_the_labels_of_the_same_tiff(weights, tmp_path):
    """Read window by window (channels made per window) with --tile-size: the labels of
    the same frame saved as a TIFF."""
    cyx = _tczyx(seed=5, t=1, z=1)[0, :, 0].repeat(2, axis=1).repeat(2, axis=2)  # 96 x 128
    _write_omezarr(tmp_path / "one.ome.zarr", cyx, axes="cyx")
    tifffile.imwrite(tmp_path / "one.tif", cyx[2])
    common = [*_gray_reference(tmp_path), *cli_model_args(weights), "--tile-size", "64"]
    assert main(["segment", str(tmp_path / "one.ome.zarr"), "--out", str(tmp_path / "z")]
                + common + ["--channels", "2"]) == 0  # fmt: skip
    assert main(["segment", str(tmp_path / "one.tif"), "--out", str(tmp_path / "t")] + common) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "z" / "one.ome.tif"), tifffile.imread(tmp_path / "t" / "one.tif")
    )
    # the target was read through windows (never whole), as the tile path reads TIFFs
    kind, img = read_target(tmp_path / "one.ome.zarr", channels=(2,), lazy=True)
    assert kind == "image" and not isinstance(img, np.ndarray) and img.shape == (2 * H, 2 * W)


def test_an_omezarr_label_image_and_reference_image(tmp_path):
    lab = np.asarray(iio.imread(_labels(tmp_path / "l.png")))
    _write_omezarr(tmp_path / "lab.zarr", lab, axes="yx")
    np.testing.assert_array_equal(read_label_image(tmp_path / "lab.zarr"), lab)
    _write_omezarr(tmp_path / "two.zarr", _tczyx(t=2, z=1)[:, 0, 0], axes="tyx")
    with pytest.raises(InvalidInputError, match="holds 2 frames"):
        load_reference_pair(tmp_path / "two.zarr", tmp_path / "l.png")


def _pyramid_tiff(path, image, levels=3):
    """``image`` as a pyramidal OME-TIFF (reduced levels in SubIFDs, as bfconvert and
    tifffile write them)."""
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, subifds=levels - 1, metadata={"axes": "YX"})
        for k in range(1, levels):
            tw.write(image[:: 2**k, :: 2**k], subfiletype=1)
    return path


def test_a_multiscale_reference_is_read_at_full_resolution_where_its_prompts_land(
    weights, tmp_path
):
    """A pyramidal OME-Zarr or OME-TIFF as a reference image (and as its label image):
    level 0 is read, so label images and prompt coordinates are in its pixels, and the
    run labels the targets as with the same reference saved as a PNG."""

    from napari_sansa.dataset import load_prompt_file

    image = make_image(0, shape=(2 * H, 2 * W), rgb=False)  # 96 x 128: levels of 48, 24
    lab = np.zeros(image.shape, np.uint8)
    lab[10:40, 20:70] = 1
    (tmp_path / "data").mkdir()
    iio.imwrite(tmp_path / "data" / "t.png", make_image(5, shape=(2 * H, 2 * W), rgb=False))
    iio.imwrite(tmp_path / "ref.png", image)
    iio.imwrite(tmp_path / "lab.png", lab)
    _write_omezarr(tmp_path / "ref.ome.zarr", image, axes="yx", levels=(2, 4))
    _write_omezarr(tmp_path / "lab.ome.zarr", lab, axes="yx", levels=(2, 4))
    _pyramid_tiff(tmp_path / "ref.ome.tif", image)
    _pyramid_tiff(tmp_path / "lab.ome.tif", lab)
    with tifffile.TiffFile(tmp_path / "ref.ome.tif") as tif:  # a pyramid indeed
        assert [lv.shape for lv in tif.series[0].levels] == [(96, 128), (48, 64), (24, 32)]
    points = [{"row": 70, "col": 100, "label": 2}, {"row": 20, "col": 110, "label": 2}]
    boxes = [{"box": [60, 10, 90, 50], "label": 3}]
    outputs = {}
    for ref, labels in [("ref.png", "lab.png"), ("ref.ome.zarr", "lab.ome.zarr"),
                        ("ref.ome.tif", "lab.ome.tif")]:  # fmt: skip
        prompts = tmp_path / f"{ref}.json"
        entry = {"image": ref, "labels": labels, "points": points, "boxes": boxes}
        prompts.write_text(json.dumps({"references": [entry]}))
        (loaded,) = load_prompt_file(prompts)
        np.testing.assert_array_equal(np.asarray(loaded.image), image)  # level 0, whole
        by_class = {p.label: p for p in loaded.prompts}
        np.testing.assert_array_equal(by_class[1].mask, lab == 1)
        np.testing.assert_array_equal(by_class[2].coords, [[70, 100], [20, 110]])
        np.testing.assert_array_equal(by_class[3].box, [60, 10, 90, 50])
        out = tmp_path / f"out-{ref}"
        args = ["segment", str(tmp_path / "data"), "--prompts", str(prompts), "--out", str(out)]
        assert main([*args, *cli_model_args(weights)]) == 0
        outputs[ref] = tifffile.imread(out / "t.tif")
    assert len(np.unique(outputs["ref.png"])) > 1
    for ref in ("ref.ome.zarr", "ref.ome.tif"):
        np.testing.assert_array_equal(outputs[ref], outputs["ref.png"], err_msg=ref)


def test_a_bioformats2raw_store_reads_its_first_image_and_a_plate_is_refused(tmp_path, caplog):
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=3)
    root.attrs["bioformats2raw.layout"] = 3
    images = [make_image(k, shape=(H, W), rgb=False) for k in (1, 2)]
    for k, img in enumerate(images):
        _write_omezarr(tmp_path / "b2r.zarr" / str(k), img, axes="yx")
    with caplog.at_level(logging.WARNING), open_stack(tmp_path / "b2r.zarr") as stack:
        np.testing.assert_array_equal(stack[0], images[0])
    assert "bioformats2raw store of 2 images: only its first, 0/, is labelled" in caplog.text
    with open_stack(tmp_path / "b2r.zarr" / "1") as stack:  # another image: its own path
        np.testing.assert_array_equal(stack[0], images[1])
    plate = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w")
    plate.attrs["plate"] = {"wells": [{"path": "A/1"}]}
    with pytest.raises(InvalidInputError, match="is an OME-Zarr plate .HCS., not an image"):
        open_stack(tmp_path / "plate.zarr")


# -- OME-Zarr bad input -------------------------------------------------------------------
def _run_bad(weights, tmp_path, capsys, target, *extra):
    out = tmp_path / "out"
    args = ["segment", str(target), *_gray_reference(tmp_path), "--out", str(out)]
    assert main([*args, *cli_model_args(weights), *extra]) == 2
    assert not out.exists()  # nothing written
    return capsys.readouterr().err


def test_a_zarr_store_without_ngff_metadata_is_refused(weights, tmp_path, capsys):
    g = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    g.create_array("0", shape=(H, W), dtype="uint8")
    err = _run_bad(weights, tmp_path, capsys, tmp_path / "plain.zarr")
    assert "plain.zarr is a Zarr store without OME-Zarr (NGFF) metadata" in err
    assert "multiscales" in err and "remove it from the input" in err
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(H, W), dtype="uint8")
    err = _run_bad(weights, tmp_path, capsys, tmp_path / "array.zarr")
    assert "array.zarr is a Zarr array without OME-Zarr (NGFF) metadata" in err


def test_an_omezarr_without_the_zarr_package_names_the_extra(tmp_path, monkeypatch):
    _write_omezarr(tmp_path / "s.ome.zarr", make_image(1, shape=(H, W), rgb=False), axes="yx")
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(InvalidInputError, match=r'needs the zarr package: pip install "napari-'):
        open_stack(tmp_path / "s.ome.zarr")


def test_axes_the_image_does_not_have_are_refused(weights, tmp_path, capsys):
    _write_omezarr(tmp_path / "s.ome.zarr", _tczyx(t=2, z=1))
    err = _run_bad(weights, tmp_path, capsys, tmp_path / "s.ome.zarr", "--axes", "TCYX")
    assert "--axes 'TCYX' does not fit" in err and "s.ome.zarr" in err
    assert "has 5 axes (recorded as TCZYX)" in err
    err = _run_bad(weights, tmp_path, capsys, tmp_path / "s.ome.zarr", "--channels", "3")
    assert "channels 0..2" in err


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_levels_that_disagree_in_shape_are_refused(weights, tmp_path, capsys, version):
    path = _write_omezarr(tmp_path / "p.ome.zarr", _tczyx(t=1, z=1), version=version)
    name = ".zarray" if version == "0.4" else "zarr.json"
    meta = json.loads((path / "s1" / name).read_text())
    meta["shape"][-1] = W * 2  # level 1 wider than level 0
    (path / "s1" / name).write_text(json.dumps(meta))
    err = _run_bad(weights, tmp_path, capsys, path)
    assert "the levels of its multiscale disagree in shape: level 1" in err
    shutil.rmtree(path / "s1")
    err = _run_bad(weights, tmp_path, capsys, path)
    assert "level 1 of its multiscale ('s1') is missing" in err


def test_absent_and_damaged_chunks(weights, tmp_path, caplog):
    """An absent chunk reads as the fill value (writers leave out chunks of it) and is
    named in a warning; a damaged chunk fails its target, naming it."""
    from dataset_files import read_csv

    path = _write_omezarr(tmp_path / "c.ome.zarr", _tczyx(t=1, z=1)[0, :, 0], axes="cyx")
    (path / "s0" / "c" / "0" / "1" / "0").unlink()  # channel 0, rows 16..31, columns 0..31
    with caplog.at_level(logging.WARNING), open_stack(path) as stack:
        frame = stack[0]
    assert not frame[16:32, :32].any() and frame[:16].any()
    assert "c.ome.zarr: 1 of the 6 chunks read (e.g. c/0/1/0) are absent" in caplog.text
    (path / "s0" / "c" / "0" / "0" / "0").write_bytes(b"not a chunk")
    out = tmp_path / "out"
    args = ["segment", str(path), *_gray_reference(tmp_path), "--out", str(out)]
    assert main([*args, *cli_model_args(weights)]) == 1
    (row,) = read_csv(out / "scores.csv")
    assert row["status"] == "failed" and "c.ome.zarr (OME-Zarr 0.5)" in row["message"]
    assert "may be damaged" in row["message"] and not (out / "c.ome.tif").exists()


# -- vendor formats through bioio ---------------------------------------------------------
def test_bioio_read_of_an_ome_tiff_gives_the_tiff_paths_labels(weights, tmp_path, monkeypatch):
    """The same OME-TIFF labelled through tifffile (as TIFFs are) and through bioio (as
    vendor files are): the same labels."""
    pytest.importorskip("bioio_ome_tiff")
    from napari_sansa.dataset import readers
    from napari_sansa.dataset.readers import vendor

    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "s.ome.tif", _tczyx(seed=9, t=2, z=1)[:, :, 0], ome=True,
                     metadata={"axes": "TCYX", "Channel": {"Name": NAMES}})  # fmt: skip
    args = ["segment", str(data), *_gray_reference(tmp_path), "--channels", "2"]
    args += cli_model_args(weights)
    assert main([*args, "--out", str(tmp_path / "tiff")]) == 0
    opened, original = [], vendor.open_vendor

    def spy(*a, **k):
        opened.append(stack := original(*a, **k))
        return stack

    monkeypatch.setattr(readers, "VENDOR_SUFFIXES", {".tif"})  # TIFFs read as vendor files
    monkeypatch.setattr(vendor, "open_vendor", spy)
    assert main([*args, "--out", str(tmp_path / "bioio")]) == 0
    assert opened and opened[0].format == "read by bioio_ome_tiff"
    assert opened[0].axes == "TCYX" and opened[0].channel_names == NAMES
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "bioio" / "s.ome.tif"),
        tifffile.imread(tmp_path / "tiff" / "s.ome.tif"),
    )


def test_a_vendor_file_without_its_plugin_names_the_extra(weights, tmp_path, capsys, monkeypatch):
    bioio = pytest.importorskip("bioio")
    from bioio_base.exceptions import UnsupportedFileFormatError

    data = tmp_path / "data"
    data.mkdir()
    (data / "scan.czi").write_bytes(b"ZISRAWFILE" + bytes(100))
    iio.imwrite(data / "other.png", make_image(1, shape=(H, W)))
    # no plugin takes .czi (as here: bioio-czi is not installed): refused before any write
    monkeypatch.setattr(bioio.plugins, "get_plugins", lambda use_cache: {".tif": []})
    err = _run_bad(weights, tmp_path, capsys, data)
    assert "scan.czi is a Zeiss CZI file" in err and "bioio-czi" in err
    assert 'pip install "napari-sansa[formats]" bioio-czi' in err

    # a plugin is listed but bioio's lookup refuses the file: the read names the plugin
    monkeypatch.setattr(bioio.plugins, "get_plugins", lambda use_cache: {".czi": []})

    def refuse(image, *a, **k):
        raise UnsupportedFileFormatError("BioImage", str(image))

    monkeypatch.setattr(bioio.BioImage, "determine_plugin", staticmethod(refuse))
    with pytest.raises(InvalidInputError, match=r"bioio-czi, which did not take it.*\[formats\]"):
        open_stack(data / "scan.czi")

    # without bioio itself
    monkeypatch.setitem(sys.modules, "bioio", None)
    err = _run_bad(weights, tmp_path, capsys, data / "scan.czi")
    assert "bioio is not installed" in err and '"napari-sansa[formats]" bioio-czi' in err


class _StandIn:
    """What bioio's BioImage gives for a vendor file, without the file (a stand-in)."""

    def __init__(self, order, shape, names, sizes=(None, 0.25, 0.25), scenes=("S0",)):
        from types import SimpleNamespace

        import dask.array as da

        self.dims = SimpleNamespace(order=order)
        rng = np.random.default_rng(0)
        self.array = rng.integers(0, 255, shape, dtype=np.uint8)
        self.dask_data = da.from_array(self.array, chunks=(1,) * (len(shape) - 2) + (16, 16))
        self.channel_names = names
        self.physical_pixel_sizes = SimpleNamespace(Z=sizes[0], Y=sizes[1], X=sizes[2])
        self.scenes = scenes


def test_vendor_dims_become_axes_read_by_windows(tmp_path, caplog):
    pytest.importorskip("dask")
    from napari_sansa.dataset.readers.vendor import open_vendor

    img = _StandIn("TCZYX", (3, 2, 1, H, W), ["a", "b"], scenes=("S0", "S1"))
    with caplog.at_level(logging.WARNING):
        stack = open_vendor(tmp_path / "x.czi", channels=(1,), bioimage=img)
    assert "holds 2 scenes" in caplog.text
    assert stack.axes == "TCYX" and len(stack) == 3 and stack.channel_names == ["a", "b"]
    assert stack.pixel_sizes == {"Y": 0.25, "X": 0.25}
    np.testing.assert_array_equal(stack[2], img.array[2, 1, 0])
    np.testing.assert_array_equal(stack.window(1)[3:40, 5:9], img.array[1, 1, 0, 3:40, 5:9])
    rgb = _StandIn("TCZYXS", (1, 1, 1, H, W, 3), ["rgb"])  # RGB samples: no channel axis
    stack = open_vendor(tmp_path / "x.czi", bioimage=rgb)
    assert stack.axes == "YXS" and len(stack) == 1 and stack.n_channels is None
    np.testing.assert_array_equal(stack[0], rgb.array[0, 0, 0])


def test_ome_zarr_outputs_take_pixel_sizes_from_the_readers(tmp_path, monkeypatch):
    """The OME-Zarr writer's pixel sizes of an input are the readers' (``image_info``, in
    micrometres): a vendor file's physical sizes (none before), an OME-Zarr image's in
    any length unit (and its time step kept); TIFF's resolution as before."""
    pytest.importorskip("dask")
    import bioio
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    from napari_sansa.dataset.outputs.omezarr import pixel_sizes

    img = _StandIn("TCZYX", (1, 1, 3, H, W), ["a"], sizes=(2.0, 0.25, 0.25))
    monkeypatch.setattr(bioio, "BioImage", lambda *a, **k: img)
    (tmp_path / "x.czi").write_bytes(b"")
    um = "micrometer"
    assert pixel_sizes(tmp_path / "x.czi") == {"z": (2.0, um), "y": (0.25, um), "x": (0.25, um)}
    store = tmp_path / "nm.ome.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    write_image(
        np.zeros((2, 3, 20, 30), np.uint8), group, axes="tzyx", fmt=FormatV05(),
        scale={"t": 5.0, "z": 2000.0, "y": 250.0, "x": 250.0},
        axes_units={"t": "second", "z": "nanometer", "y": "nanometer", "x": "nanometer"},
        scale_factors=[],
    )  # fmt: skip
    assert pixel_sizes(store) == {
        "t": (5.0, "second"), "z": (2.0, um), "y": (0.25, um), "x": (0.25, um),
    }  # fmt: skip
    tif = tmp_path / "s.tif"
    tifffile.imwrite(tif, np.zeros((2, H, W), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 3.0})  # fmt: skip
    assert pixel_sizes(tif) == {"z": (3.0, um), "y": (0.5, um), "x": (0.5, um)}
