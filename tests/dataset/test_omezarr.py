"""``--format ome-zarr``: OME-Zarr outputs (NGFF 0.4), read back with ome-zarr's reader."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import make_read_only, segment_args, write_reference

from conftest import make_image
from napari_sansa.cli import main
from napari_sansa.dataset.outputs import (
    Blocks,
    Layout,
    read_record,
    write_output,
)


def _read(store):
    """The nodes of ``store`` as ome-zarr's reader gives them, with data."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return [n for n in Reader(parse_url(str(store)))() if n.data]


def _label_node(store):
    from ome_zarr.reader import Label

    nodes = [n for n in _read(store) if n.first(Label) is not None]
    assert len(nodes) == 1
    return nodes[0]


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "data").mkdir()
    iio.imwrite(tmp_path / "data" / "a.png", make_image(1))
    stack = np.stack([make_image(2, rgb=False), make_image(3, rgb=False)])
    # an ImageJ time series with 0.5 um pixels and a 2 um z spacing
    tifffile.imwrite(
        tmp_path / "data" / "s.tif",
        stack,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TYX", "unit": "um"},
    )
    write_reference(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_cli_labels_read_back_by_ome_zarr_as_labels_groups(weights, root):
    """Labels, probabilities and a stack's labels written by the CLI are valid NGFF
    groups for ome-zarr's reader, with the axes, pixel sizes, colours and values of the
    run (the TIFF outputs' values)."""
    args = segment_args(weights, root, "--probabilities", "--tile-size", "96", "--halo", "8")
    assert main([*args, "--format", "ome-zarr"]) == 0
    assert main([*args, "--out", str(root / "tif")]) == 0
    out = root / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a.ome.zarr",
        "a_probabilities.ome.zarr",
        "s.ome.zarr",
        "s_probabilities.ome.zarr",
        "scores.csv",
    ]
    node = _label_node(out / "a.ome.zarr")
    assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
    assert node.metadata["name"] == "sansa"
    assert set(node.metadata["color"]) == {0, 1, 2}
    assert node.metadata["color"][0][3] == 0 and node.metadata["color"][1][3] == 1
    assert node.metadata["properties"][2] == {"class": "class 2"}
    a = np.asarray(node.data[0])
    np.testing.assert_array_equal(a, tifffile.imread(root / "tif" / "a.tif"))
    # the stack: axes t, y, x with the input's pixel sizes (0.5 um) and no unit on t
    node = _label_node(out / "s.ome.zarr")
    axes = node.metadata["axes"]
    assert [a["name"] for a in axes] == ["t", "y", "x"]
    assert axes[0]["type"] == "time" and axes[1] == {
        "name": "y",
        "type": "space",
        "unit": "micrometer",
    }
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [1.0, 0.5, 0.5]
    np.testing.assert_array_equal(np.asarray(node.data[0]), tifffile.imread(root / "tif" / "s.tif"))
    # probabilities: an image with a channel axis, by class; the TIFF's values
    for name, n_axes in (("a", "cyx"), ("s", "tcyx")):
        (img,) = _read(out / f"{name}_probabilities.ome.zarr")
        assert "".join(a["name"] for a in img.metadata["axes"]) == n_axes
        expected = tifffile.imread(root / "tif" / f"{name}_probabilities.tif")
        if name == "s":  # TIFF: TCYX as well
            assert expected.shape == img.data[0].shape
        np.testing.assert_allclose(np.asarray(img.data[0]), expected, atol=1e-6)
    # the record: in the store's attributes, as in the TIFF's description
    record = read_record(out / "a.ome.zarr")
    assert record["output"] == "labels" and record["classes"] == [1, 2]
    assert (
        record["run"] == json.loads((out / ".napari-sansa" / "run.json").read_text())["signature"]
    )
    # the same command again: nothing to do, every store untouched
    before = _tree_digest(out)
    assert main([*args, "--format", "ome-zarr"]) == 0
    assert _tree_digest(out) == before


def _tree_digest(folder: Path) -> dict:
    """Every file under ``folder`` (but napari-sansa's own folder and the CSV) by content
    and modification time."""
    found = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] != ".napari-sansa" and p.name != "scores.csv":
            found[str(rel)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return found


def _blocks(shape, edges_r, edges_c, array):
    """``Blocks`` of ``array`` cut at those row and column edges, in a shuffled order."""
    cuts = [
        (slice(r0, r1), slice(c0, c1))
        for r0, r1 in zip(edges_r[:-1], edges_r[1:], strict=True)
        for c0, c1 in zip(edges_c[:-1], edges_c[1:], strict=True)
    ]
    order = np.random.default_rng(2).permutation(len(cuts))
    return Blocks([(*cuts[i], array[..., cuts[i][0], cuts[i][1]]) for i in order])


def test_pyramid_levels_are_nearest_neighbour_and_written_by_blocks(tmp_path):
    """A label image larger than a chunk gets levels, each every second pixel of the one
    before; blocks not aligned with the chunks, in any order (a tiled run's kept parts)
    and whole planes give the same store; probabilities come as blocks of every class."""
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (1300, 1100)).astype(np.uint8)
    rows, cols = [0, 300, 777, 1300], [0, 450, 1000, 1100]
    record = {"output": "labels", "classes": [1, 2, 3], "source": ""}
    by_blocks = write_output(
        tmp_path / "t.ome.zarr",
        Layout(lab.shape, np.uint8),
        _blocks(lab.shape, rows, cols, lab),
        record,
    )
    whole = write_output(tmp_path / "w.ome.zarr", Layout(lab.shape, np.uint8), lab, record)
    node = _label_node(by_blocks)
    # levels until one fits in a chunk (512 x 512)
    assert [d.shape for d in node.data] == [(1300, 1100), (650, 550), (325, 275)]
    for k, level in enumerate(node.data):
        np.testing.assert_array_equal(np.asarray(level), lab[:: 2**k, :: 2**k])
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    for a, b in zip(_read(whole)[0].data, node.data, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # NGFF 0.4 on zarr v2, chunks of 512 under "/" keys
    meta = json.loads((by_blocks / "sansa" / "0" / ".zarray").read_text())
    assert meta["chunks"] == [512, 512] and meta["dimension_separator"] == "/"
    attrs = json.loads((by_blocks / "sansa" / ".zattrs").read_text())
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert attrs["image-label"]["version"] == "0.4"
    # probabilities of 2 classes, by blocks of both
    probs = rng.random((2, 1300, 1100), dtype=np.float32)
    path = write_output(
        tmp_path / "p.ome.zarr",
        Layout(probs.shape, np.float32),
        _blocks(probs.shape, rows, cols, probs),
        {"output": "probabilities", "classes": [1, 2]},
    )
    (img,) = _read(path)
    np.testing.assert_array_equal(np.asarray(img.data[0]), probs)
    np.testing.assert_array_equal(np.asarray(img.data[1]), probs[:, ::2, ::2])
    assert img.metadata["channel_names"] == ["class 1", "class 2"]


def test_stack_axes_are_put_in_ngff_order(tmp_path):
    """Probabilities of a TZ stack (TZCYX) are stored TCZYX, as NGFF wants."""
    probs = np.arange(2 * 3 * 2 * 4 * 5, dtype=np.float32).reshape(2, 3, 2, 4, 5)
    path = write_output(
        tmp_path / "p.ome.zarr",
        Layout(probs.shape, np.float32, "TZCYX"),
        probs,
        {"output": "probabilities", "classes": [1, 2]},
    )
    (img,) = _read(path)
    assert "".join(a["name"] for a in img.metadata["axes"]) == "tczyx"
    np.testing.assert_array_equal(np.asarray(img.data[0]), probs.transpose(0, 2, 1, 3, 4))
    # a stack's pyramid reduces Y and X of every frame, never T
    lab = np.random.default_rng(3).integers(0, 3, (2, 700, 30)).astype(np.uint8)
    path = write_output(
        tmp_path / "s.ome.zarr", Layout(lab.shape, np.uint8, "TYX"), iter(lab), {"classes": [1, 2]}
    )
    node = _label_node(path)
    assert [d.shape for d in node.data] == [(2, 700, 30), (2, 350, 15)]
    for k, level in enumerate(node.data):
        np.testing.assert_array_equal(np.asarray(level), lab[:, :: 2**k, :: 2**k])


def test_an_interrupted_store_is_redone_a_complete_one_skipped(weights, root, capsys):
    """A store killed mid-write is a temporary folder: the next run removes it and writes
    the target; a complete store is not written again; a store of that name that is not
    napari-sansa's is refused, never replaced."""
    args = segment_args(weights, root, "--format", "ome-zarr")
    out = root / "out"

    import napari_sansa.dataset.outputs.omezarr as omezarr

    write_metadata = omezarr.OmeZarrWriter._write_metadata

    def killed(self):  # killed once the chunks of s.ome.zarr are written, before its record
        if self.path.name == "s.ome.zarr":
            raise KeyboardInterrupt
        write_metadata(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(omezarr.OmeZarrWriter, "_write_metadata", killed)
        m.setattr(omezarr.OmeZarrWriter, "abort", lambda self: None)  # a kill cleans nothing
        assert main(args) == 130
    names = sorted(p.name for p in out.iterdir())
    assert "a.ome.zarr" in names and "s.ome.zarr" not in names
    (partial,) = [n for n in names if n.startswith(".napari-sansa-tmp.s.ome.zarr.")]
    assert (out / partial / "sansa" / "0" / ".zarray").is_file()  # chunks, no record
    assert read_record(out / partial) is None
    done = _tree_digest(out / "a.ome.zarr")
    assert main(args) == 0
    assert _tree_digest(out / "a.ome.zarr") == done  # complete: skipped, not rewritten
    assert not [p for p in out.iterdir() if p.name.startswith(".napari-sansa-tmp.")]
    assert np.asarray(_label_node(out / "s.ome.zarr").data[0]).shape == (2, 96, 128)
    assert "labelled 1 target(s), skipped 1" in capsys.readouterr().err
    # a store napari-sansa did not write, at an output's name: refused (exit code 2)
    other = root / "other"
    (other / "a.ome.zarr").mkdir(parents=True)
    (other / "a.ome.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    mine = _tree_digest(other)
    assert main([*args, "--out", str(other)]) == 2
    assert "a.ome.zarr" in capsys.readouterr().err
    assert _tree_digest(other) == mine
    # not even --overwrite replaces it: that target fails, the others are labelled
    assert main([*args, "--out", str(other), "--overwrite"]) == 1
    assert "is a folder that napari-sansa did not write" in capsys.readouterr().err
    assert {k: v for k, v in _tree_digest(other).items() if k.startswith("a.ome.zarr")} == mine
    assert (other / "s.ome.zarr").is_dir()


def test_a_removed_probabilities_store_goes_with_a_run_without_them(weights, root):
    args = segment_args(weights, root, "--format", "ome-zarr", target=root / "data" / "a.png")
    assert main([*args, "--probabilities"]) == 0
    assert (root / "out" / "a_probabilities.ome.zarr").is_dir()
    assert main([*args, "--overwrite"]) == 0
    assert not (root / "out" / "a_probabilities.ome.zarr").exists()
    assert not [p for p in (root / "out").iterdir() if p.name.startswith(".napari-sansa-tmp")]


def test_a_read_only_out_is_refused_with_exit_code_2(weights, root, capsys, monkeypatch):
    """As for TIFF: creating anything in ``--out`` raises EACCES (root ignores modes, so
    the refusal is provoked in-process) -> a message, exit code 2, nothing written."""
    out = root / "out"
    out.mkdir()
    make_read_only(monkeypatch, out)
    assert main(segment_args(weights, root, "--format", "ome-zarr")) == 2
    err = capsys.readouterr().err
    assert f"cannot write into the output folder {out} (Permission denied)" in err
    assert list(out.iterdir()) == []


# -- labels added to the user's own image store ------------------------------------------------
def _image_store(path: Path, version: str) -> Path:
    """An OME-Zarr image (TCZYX, 3 channels) with pixel sizes and one label, "cells",
    written with ome-zarr's writer in NGFF ``version``."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image, write_labels

    fmt = FormatV04() if version == "0.4" else FormatV05()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (2, 3, 1, 40, 50), dtype=np.uint8)
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    scale = {"z": 2.0, "y": 0.25, "x": 0.25}
    units = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    write_image(img, group, axes="tczyx", fmt=fmt, scale=scale, axes_units=units, scale_factors=[])
    cells = (img[:, 0] > 200).astype(np.uint8)
    write_labels(cells, group, "cells", axes="tzyx", fmt=fmt, scale_factors=[])
    return path


def _files(store: Path) -> dict:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_added_to_an_image_store_change_nothing_there(tmp_path, version):
    from napari_sansa.dataset.outputs.omezarr import add_labels

    store = _image_store(tmp_path / "img.ome.zarr", version)
    before = _files(store)
    labels_meta = "labels/zarr.json" if version == "0.5" else "labels/.zattrs"
    lab = np.zeros((2, 1, 40, 50), np.uint8)
    lab[:, :, 5:20, 10:30] = 1
    add_labels(store, "sansa", lab, [1], {"output": "labels", "run": "x"})
    after = _files(store)
    for name, data in before.items():  # every file there before: byte for byte
        if name != labels_meta:
            assert after[name] == data, name
    old, new = json.loads(before[labels_meta]), json.loads(after[labels_meta])
    if version == "0.5":
        old, new = old["attributes"]["ome"], new["attributes"]["ome"]
    assert new == {**old, "labels": ["cells", "sansa"]}  # one entry added, nothing changed
    # ome-zarr reads both labels, ours with the image's pixel sizes
    from ome_zarr.reader import Label

    nodes = [n for n in _read(store) if n.first(Label) is not None]
    assert sorted(n.metadata["name"] for n in nodes) == ["cells", "sansa"]
    ours = next(n for n in nodes if n.metadata["name"] == "sansa")
    np.testing.assert_array_equal(np.asarray(ours.data[0]), lab)
    assert ours.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 2.0, 0.25, 0.25]
    # a label of that name is there: refused, nothing changed
    with pytest.raises(Exception, match="already has a label named 'sansa'"):
        add_labels(store, "sansa", lab, [1], {})
    with pytest.raises(Exception, match="already has a label named 'cells'"):
        add_labels(store, "cells", lab, [1], {})
    assert _files(store) == after


def test_into_input_store_needs_ome_zarr_targets(weights, root, capsys, no_model):
    args = segment_args(weights, root, "--format", "ome-zarr", "--into-input-store")
    assert main(args) == 2
    assert "is not one" in capsys.readouterr().err and not (root / "out" / "a.ome.zarr").exists()
    assert main(segment_args(weights, root, "--into-input-store")) == 2
    assert "--into-input-store must be given only with --format ome-zarr" in capsys.readouterr().err


def test_into_input_store_refuses_a_foreign_label_and_a_read_only_store(tmp_path, monkeypatch):
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.dataset.discovery import Target
    from napari_sansa.dataset.input_store import check_input_stores

    store = _image_store(tmp_path / "img.ome.zarr", "0.4")
    t = Target(str(store), "img.ome.zarr", "stack")
    check_input_stores([t], "sig")  # fine: writable, no "sansa" label
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(InvalidInputError, match="cannot write into .*Permission denied"):
            check_input_stores([t], "sig")
    (store / "labels" / "sansa").mkdir()
    with pytest.raises(InvalidInputError, match="already has a label named 'sansa'"):
        check_input_stores([t], "sig")


@pytest.fixture()
def no_model(monkeypatch):
    import napari_sansa.dataset.models as models

    def refuse(source):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "cached_model", refuse)


@pytest.mark.slow
def test_dask_workers_write_each_target_s_stores(weights, root):
    """On a Dask cluster each worker writes the stores of the targets it computed (each
    chunk of targets its own stores): the same labels as a local run."""
    distributed = pytest.importorskip("distributed")
    from napari_sansa.dataset import ModelSource, load_reference_pair, segment_dataset

    iio.imwrite(root / "data" / "b.png", make_image(4))
    ref = load_reference_pair(root / "ref.png", root / "ref_labels.png")
    source = ModelSource(
        config="sam2_hiera_t",
        sam2_checkpoint=str(weights[0]),
        adapter_checkpoint=str(weights[1]),
        device="cpu",
        image_size=256,
    )
    targets = [root / "data" / "a.png", root / "data" / "b.png"]
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        dist = segment_dataset(
            targets, [ref], root / "dist", model=source, client=client, chunk_size=1,
            format="ome-zarr", progress=False,
        )  # fmt: skip
    finally:
        client.close()
        cluster.close()
    local = segment_dataset(targets, [ref], root / "local", model=source, progress=False)
    assert dist.ok and dist.done == 2 and local.ok
    for name in ("a", "b"):
        got = np.asarray(_label_node(root / "dist" / f"{name}.ome.zarr").data[0])
        np.testing.assert_array_equal(got, tifffile.imread(root / "local" / f"{name}.tif"))
    assert not [p for p in (root / "dist").iterdir() if p.name.startswith(".napari-sansa-tmp")]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_cli_into_input_store_adds_labels_to_the_image_store(weights, root, version, capsys):
    """``--format ome-zarr --into-input-store`` on an OME-Zarr image written by ome-zarr:
    the store gains ``labels/sansa`` (ome-zarr reads it with the image's axes and shape
    but c), every file there before stays byte for byte (but the ``labels`` list, one
    name added), the outputs in --out are written, and a rerun changes nothing."""
    data = root / "stores"
    data.mkdir()
    store = _image_store(data / "img.ome.zarr", version)
    before = _files(store)
    labels_meta = "labels/zarr.json" if version == "0.5" else "labels/.zattrs"
    args = segment_args(
        weights, root, "--format", "ome-zarr", "--into-input-store", "--channels", "0,1,2",
        target=data,
    )  # fmt: skip
    assert main(args) == 0
    after = _files(store)
    for name, content in before.items():
        if name != labels_meta:
            assert after[name] == content, name
    old, new = json.loads(before[labels_meta]), json.loads(after[labels_meta])
    if version == "0.5":
        old, new = old["attributes"]["ome"], new["attributes"]["ome"]
    assert new == {**old, "labels": ["cells", "sansa"]}
    from ome_zarr.reader import Label

    nodes = [n for n in _read(store) if n.first(Label) is not None]
    ours = next(n for n in nodes if n.metadata["name"] == "sansa")
    assert [a["name"] for a in ours.metadata["axes"]] == ["t", "z", "y", "x"]
    assert ours.data[0].shape == (2, 1, 40, 50)
    assert ours.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 2.0, 0.25, 0.25]
    out_node = _label_node(root / "out" / "img.ome.zarr")
    np.testing.assert_array_equal(np.asarray(ours.data[0]), np.asarray(out_node.data[0]))
    assert out_node.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 2.0, 0.25, 0.25]
    assert [a["name"] for a in out_node.metadata["axes"]] == ["t", "z", "y", "x"]
    assert (root / "out" / "scores.csv").is_file()
    # a rerun: nothing to do, the image store and --out untouched
    out_before = _tree_digest(root / "out")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "labelled 0 target(s), skipped 1 already done" in err, err
    assert _files(store) == after
    assert _tree_digest(root / "out") == out_before
