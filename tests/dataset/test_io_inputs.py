"""Reading inputs: TIFF pages and planar RGB, label images, prompt files, checkpoints, CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from dataset_files import write_reference
from PIL import Image

from conftest import cli_model_args, make_image
from napari_sansa.cli import main
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_image, image_hw, to_float_rgb
from napari_sansa.dataset import load_prompt_file, load_reference_pair
from napari_sansa.dataset.io import TiffStack, open_target, read_image, read_label_image

H, W = 48, 64


def _pages_one_at_a_time(path, frames, **kwargs):
    """One tw.write per frame: tifffile reads the pages back as separate series."""
    with tifffile.TiffWriter(path) as tw:
        for f in frames:
            tw.write(f, **kwargs)


def _reference(root: Path):
    return write_reference(root)


# -- TIFF stacks ---------------------------------------------------------------------------
def test_pages_written_one_at_a_time_are_one_stack(tmp_path):
    frames = [make_image(40 + i, shape=(H, W), rgb=False) for i in range(3)]
    _pages_one_at_a_time(tmp_path / "sep.tif", frames)
    with tifffile.TiffFile(tmp_path / "sep.tif") as tif:
        assert len(tif.series) == 3  # the layout this test is about
    with open_target(tmp_path / "sep.tif") as (kind, stack):
        assert kind == "stack" and len(stack) == 3 and stack.frame_shape == (H, W)
        for i in range(3):
            np.testing.assert_array_equal(stack[i], frames[i])
    assert read_image(tmp_path / "sep.tif").shape == (3, H, W)  # not page 0 alone

    rgb = [make_image(50 + i, shape=(H, W)) for i in range(2)]
    _pages_one_at_a_time(tmp_path / "seprgb.tif", rgb, photometric="rgb")
    with TiffStack(tmp_path / "seprgb.tif") as stack:
        assert len(stack) == 2 and stack.frame_shape == (H, W, 3)
        np.testing.assert_array_equal(stack[1], rgb[1])


def test_pages_of_different_sizes_are_refused_not_dropped(tmp_path):
    frames = [np.full(s, 7, np.uint8) for s in [(40, 48), (50, 60), (50, 60)]]
    _pages_one_at_a_time(tmp_path / "diff.tif", frames)
    for read in (TiffStack, read_image, lambda p: open_target(p).__enter__()):
        with pytest.raises(InvalidInputError) as info:
            read(tmp_path / "diff.tif")
        text = str(info.value)
        assert "diff.tif" in text and "different sizes" in text and "40x48, 50x60" in text
        assert "separate files" in text


def test_planar_rgb_stack_has_samples_last(tmp_path):
    rgb = np.stack([make_image(60 + i, shape=(H, W)) for i in range(3)])  # (3, H, W, 3)
    planar = np.ascontiguousarray(np.moveaxis(rgb, -1, 1))  # (3, 3, H, W): QSYX
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    with open_target(tmp_path / "p.tif") as (kind, stack):
        assert kind == "stack" and len(stack) == 3 and stack.frame_shape == (H, W, 3)
        for i in range(3):
            np.testing.assert_array_equal(stack[i], rgb[i])
            check_image(stack[i], f"frame {i}")
    # a single planar page as before: an RGB image
    tifffile.imwrite(tmp_path / "p1.tif", planar[0], photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p1.tif"), rgb[0])


def test_cli_labels_every_page_and_reports_bad_files(weights, tmp_path):
    """Stacks of separately written pages, planar RGB, gray+alpha and broken files."""
    _reference(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    _pages_one_at_a_time(
        data / "sep.tif", [make_image(70 + i, shape=(H, W), rgb=False) for i in range(3)]
    )
    rgb = np.stack([make_image(80 + i, shape=(H, W)) for i in range(2)])
    tifffile.imwrite(
        data / "planar.tif",
        np.ascontiguousarray(np.moveaxis(rgb, -1, 1)),
        photometric="rgb",
        planarconfig="separate",
    )
    _pages_one_at_a_time(
        data / "diff.tif", [make_image(90, shape=s, rgb=False) for s in [(40, 48), (50, 60)]]
    )
    gray = make_image(95, shape=(H, W), rgb=False)
    iio.imwrite(data / "la.png", np.stack([gray, np.full_like(gray, 255)], axis=-1))
    (data / "bad.png").write_bytes(b"this is not a PNG file")
    before = {f.name: f.read_bytes() for f in data.iterdir()}
    args = [
        "segment",
        str(data),
        "-r",
        str(tmp_path / "ref.png"),
        str(tmp_path / "ref_labels.png"),
        "--out",
        str(tmp_path / "out"),
        *cli_model_args(weights),
    ]
    assert main(args) == 1  # two files failed, the others were labelled
    out = tmp_path / "out"
    assert tifffile.imread(out / "sep.tif").shape == (3, H, W)
    assert tifffile.imread(out / "planar.tif").shape == (2, H, W)
    assert tifffile.imread(out / "la.tif").shape == (H, W)
    assert not (out / "diff.tif").exists() and not (out / "bad.tif").exists()
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_name: dict = {}
    for r in rows:
        by_name.setdefault(Path(r["target"]).name, []).append(r)
    assert [r["frame"] for r in by_name["sep.tif"]] == ["0", "1", "2"]
    assert all(r["status"] == "ok" for r in by_name["sep.tif"] + by_name["planar.tif"])
    assert by_name["la.png"][0]["status"] == "ok"
    (diff,) = by_name["diff.tif"]
    assert diff["status"] == "failed" and "different sizes" in diff["message"]
    (bad,) = by_name["bad.png"]
    assert bad["status"] == "failed"
    # the reason in words, not the image library's own ("Could not find a backend ...")
    assert bad["message"] == (
        f"{data / 'bad.png'} is not a readable image (its contents are not PNG image data); "
        "it may be damaged, incomplete or not an image: check the file, replace it or remove "
        "it from the input"
    )
    assert {f.name: f.read_bytes() for f in data.iterdir()} == before  # inputs untouched


def test_animated_images_get_what_to_do_on_the_command_line(weights, tmp_path, capsys):
    """An animated GIF is refused with the conversion to make (not with advice for Python
    callers); a still GIF is read as the image it is."""
    _reference(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    frames = np.stack([make_image(60 + i) for i in range(3)])
    iio.imwrite(data / "anim.gif", frames, extension=".gif")
    Image.fromarray(make_image(63)).save(data / "still.gif")
    assert read_image(data / "still.gif").shape == (96, 128, 3)
    base = ["segment", "--out", str(tmp_path / "out"), *cli_model_args(weights)]
    assert (
        main([*base, str(data), "-r", str(tmp_path / "ref.png"), str(tmp_path / "ref_labels.png")])
        == 1
    )
    with open(tmp_path / "out" / "scores.csv") as fh:
        rows = {Path(r["target"]).name: r for r in csv.DictReader(fh)}
    assert rows["still.gif"]["status"] == "ok"
    assert tifffile.imread(tmp_path / "out" / "still.tif").shape == (96, 128)
    anim = rows["anim.gif"]
    assert anim["status"] == "failed"
    assert "anim.gif is an animated image of 3 frames" in anim["message"]
    assert "multi-page TIFF" in anim["message"] and "folder" in anim["message"]
    assert "list of images" not in anim["message"]
    # as a reference: one frame is needed
    capsys.readouterr()
    ref = ["-r", str(data / "anim.gif"), str(tmp_path / "ref_labels.png")]
    assert main([*base, str(data / "still.gif"), *ref]) == 2
    err = capsys.readouterr().err
    assert "anim.gif is an animated image of 3 frames, but a reference image is one frame" in err
    assert "save the frame you annotated as an image of its own" in err
    assert "list of images" not in err and "Traceback" not in err


def test_multi_picture_jpegs_of_cameras_are_labelled(weights, tmp_path, capsys):
    """An MPO (a camera's or phone's JPEG with a preview picture: two "frames" for PIL) is
    no animation: its first picture is read and labelled."""
    _reference(tmp_path)
    pixels = make_image(64)
    photo = Image.fromarray(pixels)
    photo.save(
        tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[photo.resize((32, 24))]
    )
    with Image.open(tmp_path / "camera.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
    assert read_image(tmp_path / "camera.jpg").shape == pixels.shape
    ref = ["-r", str(tmp_path / "ref.png"), str(tmp_path / "ref_labels.png")]
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "camera.jpg"), *ref, "--out", str(out)]
    assert main([*args, *cli_model_args(weights)]) == 0, capsys.readouterr().err
    assert tifffile.imread(out / "camera.tif").shape == pixels.shape[:2]


@pytest.mark.parametrize("name", ["labels.gif", "labels.png"])
def test_animated_label_images_are_refused_as_label_images(tmp_path, name):
    """An animated GIF (palette) or PNG given as labels: refused with advice for label
    images, neither read as its first frame nor given the advice for targets."""
    frames = np.stack([np.full((H, W), i, np.uint8) for i in range(3)])
    iio.imwrite(tmp_path / name, frames, extension=Path(name).suffix)
    with Image.open(tmp_path / name) as im:
        assert im.is_animated
    with pytest.raises(InvalidInputError) as info:
        read_label_image(tmp_path / name)
    text = str(info.value)
    assert f"{name} is an animated image of 3 frames, but a label image is one frame" in text
    assert "save the labels of the frame you annotated alone" in text
    assert "multi-page TIFF" not in text


# -- images and label images -------------------------------------------------------------
def test_gray_alpha_images_are_accepted_like_rgba(tmp_path):
    gray = make_image(3, shape=(H, W), rgb=False)
    la = np.stack([gray, np.arange(H * W, dtype=np.uint8).reshape(H, W)], axis=-1)
    assert image_hw(la) == (H, W)
    assert check_image(la) == (H, W)
    np.testing.assert_array_equal(to_float_rgb(la), to_float_rgb(gray))  # alpha dropped
    iio.imwrite(tmp_path / "ref_la.png", la)
    lab = np.zeros((H, W), np.uint8)
    lab[10:30, 10:40] = 1
    iio.imwrite(tmp_path / "lab.png", lab)
    ref = load_reference_pair(tmp_path / "ref_la.png", tmp_path / "lab.png")
    assert ref.classes == (1,)
    with pytest.raises(InvalidInputError, match="2 \\(gray \\+ alpha\\)"):
        image_hw(np.zeros((H, W, 5), np.uint8))


def test_corrupt_and_empty_images_are_named_with_a_reason(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"definitely not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    good = tmp_path / "good.png"
    iio.imwrite(good, make_image(1))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:150])
    for name, reason in [
        ("bad.png", "its contents are not PNG image data"),
        ("empty.jpg", "the file is empty, 0 bytes"),
        ("cut.png", "OSError: image file is truncated"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            read_image(tmp_path / name)
        assert str(info.value) == (
            f"{tmp_path / name} is not a readable image ({reason}); it may be damaged, "
            "incomplete or not an image: check the file, replace it or remove it from the input"
        )


@pytest.mark.parametrize("mode", ["L", "P"])
def test_an_image_over_pils_pixel_limit_is_refused_with_a_message(tmp_path, monkeypatch, mode):
    # PIL refuses images of more than 2 x MAX_IMAGE_PIXELS (a possible decompression bomb);
    # read_label_image let that error through as a traceback
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "huge.png"
    Image.new(mode, (100, 100)).save(path)
    for read in (read_label_image, read_image):
        with pytest.raises(InvalidInputError, match="huge.png is too large to read whole"):
            read(path)


def test_palette_and_16_bit_label_images(tmp_path):
    iio.imwrite(tmp_path / "ref.png", make_image(5, shape=(H, W)))
    lab = np.zeros((H, W), np.uint8)
    lab[5:20, 5:25] = 1
    lab[25:40, 30:60] = 15
    pal = Image.fromarray(lab, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 13 + [192, 128, 128] + [0] * 720)
    pal.save(tmp_path / "voc.png")
    assert Image.open(tmp_path / "voc.png").mode == "P"
    np.testing.assert_array_equal(read_label_image(tmp_path / "voc.png"), lab)
    ref = load_reference_pair(tmp_path / "ref.png", tmp_path / "voc.png")
    assert ref.classes == (1, 15)
    np.testing.assert_array_equal(ref.prompts[1].mask, lab == 15)

    lab16 = lab.astype(np.uint16)
    lab16[lab == 15] = 300
    iio.imwrite(tmp_path / "lab16.png", lab16)
    tifffile.imwrite(tmp_path / "lab16.tif", lab16)
    for name in ("lab16.png", "lab16.tif"):
        assert load_reference_pair(tmp_path / "ref.png", tmp_path / name).classes == (1, 300)
    # a color label image is still refused, with what to use instead
    iio.imwrite(tmp_path / "color.png", np.stack([lab * 10] * 3, axis=-1))
    with pytest.raises(InvalidInputError, match="palette PNG"):
        load_reference_pair(tmp_path / "ref.png", tmp_path / "color.png")


# -- prompt files ----------------------------------------------------------------------------
def _prompt_file(root: Path, entry_or_data, name="prompts.json"):
    data = entry_or_data
    if isinstance(entry_or_data, dict) and "references" not in entry_or_data:
        data = {"references": [{"image": "ref.png", **entry_or_data}]}
    path = root / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "content, words",
    [
        ({"points": [[40, 60]]}, ["references[0], points[0]", '"row": ROW', "[40, 60]"]),
        ({"points": {"row": 3, "col": 3}}, ["references[0]", '"points" must be a list']),
        ({"references": [{"image": ["ref.png"]}]}, ['"image" must be the path', "string"]),
        (
            {"points": [{"row": "a", "col": 3}]},
            ["points[0]", '"row" must be a finite number', '"a"'],
        ),
        ({"points": [{"row": float("inf"), "col": 3}]}, ['"row" must be a finite number']),
        ({"points": [{"row": 10**400, "col": 3}]}, ['"row" must be a finite number']),
        ({"points": [{"col": 3}]}, ["points[0]", 'lacks "row"']),
        ({"points": [{"row": 3, "col": 3, "positive": "false"}]}, ['"positive"', "true or"]),
        ({"points": [{"row": 3, "col": 3, "label": 0}]}, ["points[0]", "class id >= 1"]),
        ({"points": [{"row": 3, "col": 3, "label": True}]}, ["points[0]", "boolean True"]),
        ({"boxes": [{"box": [5, 5, 9, 9], "label": True}]}, ["boxes[0]", "boolean True"]),
        ({"scribbles": [{"path": [[1, 2], [3, 4]], "label": True}]}, ["scribbles[0]", "boolean"]),
        ({"points": [{"row": 3, "col": 3, "lable": 2}]}, ["points[0]", "unknown", '"lable"']),
        ({"point": [{"row": 3, "col": 3}]}, ["references[0]", "unknown", '"point"']),
        ({"boxes": [[60, 10, 85, 50]]}, ["boxes[0]", '{"box": [MIN_ROW']),
        ({"boxes": [{"box": [1, 2, 3]}]}, ["boxes[0]", "4 numbers"]),
        ({"boxes": [{"box": [5, 5, 5, 9]}]}, ["boxes[0]", "degenerate"]),
        ({"scribbles": [{"path": [1, 2, 3]}]}, ["scribbles[0]", "[ROW, COL] pairs"]),
        ({"scribbles": "x"}, ['"scribbles" must be a list']),
        ({"labels": 3, "points": [{"row": 3, "col": 3}]}, ['"labels" must be the path']),
        ([{"image": "ref.png"}], ['{"references": [...]}']),
        ({"references": ["ref.png"]}, ["references[0] must be an object"]),
        ({"references": []}, ["lists no references"]),
        ({"image": "nope.png", "points": [{"row": 3, "col": 3}]}, ["references[0]", "nope.png"]),
    ],
)
def test_malformed_prompt_files_name_the_entry_and_the_form(tmp_path, content, words):
    _reference(tmp_path)
    path = _prompt_file(tmp_path, content)
    with pytest.raises(InvalidInputError) as info:
        load_prompt_file(path)
    text = str(info.value)
    assert str(path) in text, text
    for w in words:
        assert w in text, text


def test_valid_prompt_file_and_null_parts(tmp_path):
    lab = _reference(tmp_path)
    path = _prompt_file(
        tmp_path,
        {
            "labels": None,
            "points": [
                {"row": 30, "col": 50},
                {"row": 5, "col": 5, "label": 1, "positive": False},
                {"row": 70, "col": 20, "label": 2},
            ],
            "boxes": [{"box": [60, 10, 85, 50], "label": 3}],
            "scribbles": None,
        },
    )
    (ref,) = load_prompt_file(path)
    assert ref.classes == (1, 2, 3)
    points = [p for p in ref.prompts if type(p).__name__ == "Points"]
    assert [p.positive.tolist() for p in points] == [[True, False], [True]]
    # label images from a prompt file: palette PNGs give their indices there too
    pal = Image.fromarray(lab, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    path = _prompt_file(tmp_path, {"labels": "pal.png"})
    assert load_prompt_file(path)[0].classes == (1, 2)


def test_prompt_file_with_a_utf8_byte_order_mark_is_read(tmp_path):
    """Windows editors (Notepad) may start a UTF-8 file with a BOM: it is no content."""
    _reference(tmp_path)
    path = _prompt_file(tmp_path, {"points": [{"row": 30, "col": 50, "label": 2}]})
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (ref,) = load_prompt_file(path)
    assert ref.classes == (2,)


def _one_prompt_of_each_class():
    """One prompt of every prompt class, each of its own class id (masks of the label
    image ``write_reference`` writes: classes 1 and 2)."""
    from napari_sansa.core.prompts import PROMPT_CLASSES, Box, Mask, Points, Scribble

    lab = np.zeros((96, 128), np.uint8)
    lab[20:50, 30:80] = 1
    samples = {
        Mask: Mask(lab == 1, label=1),
        Points: Points([[10.5, 20], [90, 3.25]], label=3, positive=[True, False]),
        Box: Box((60, 10, 85.5, 50), label=4),
        Scribble: Scribble([[5, 5], [40, 100.75], [80, 120]], label=5),
    }
    # a new prompt class needs a sample here, and its JSON form, for the tests below
    assert set(samples) == set(PROMPT_CLASSES)
    return samples


def test_every_prompt_class_round_trips_through_its_json_form():
    """A prompt written as its JSON form reads back the same (sparse kinds through
    ``from_json``; a mask is a label image, written by the next test)."""
    for kind, prompt in _one_prompt_of_each_class().items():
        if not kind.sparse:
            continue
        text = json.dumps(prompt.to_json())  # plain JSON: no numpy values
        (back,) = kind.from_json(json.loads(text), "here")
        assert type(back) is kind
        assert back.to_json() == prompt.to_json()
        assert back.fingerprint() == prompt.fingerprint()


def test_the_prompt_file_reads_every_prompt_class_by_its_key(tmp_path):
    """load_prompt_file's table has one key per prompt class, and a file listing one prompt
    of each class (masks by their label image) gives them back, in the table's order."""
    from napari_sansa.core.prompts import PROMPT_CLASSES
    from napari_sansa.dataset.references import PROMPT_FILE_KEYS

    keys = [kind.json_key for kind in PROMPT_CLASSES]
    assert len(set(keys)) == len(keys)
    assert set(PROMPT_FILE_KEYS) == set(keys)
    _reference(tmp_path)
    samples = _one_prompt_of_each_class()
    entry = {}
    for kind, prompt in samples.items():
        if kind.sparse:
            entry[kind.json_key] = prompt.to_json()
        else:
            iio.imwrite(tmp_path / "one.png", prompt.mask.astype(np.uint8) * prompt.label)
            entry[kind.json_key] = "one.png"
    (ref,) = load_prompt_file(_prompt_file(tmp_path, entry))
    order = {key: i for i, key in enumerate(PROMPT_FILE_KEYS)}
    expected = sorted(samples.values(), key=lambda p: order[p.json_key])
    assert [p.fingerprint() for p in ref.prompts] == [p.fingerprint() for p in expected]


@pytest.mark.parametrize("kind", ["boxes", "scribbles"])
def test_a_bad_label_names_its_entry_once(tmp_path, kind):
    _reference(tmp_path)
    item = {"box": [5, 5, 9, 9]} if kind == "boxes" else {"path": [[1, 2], [3, 4]]}
    path = _prompt_file(tmp_path, {kind: [{**item, "label": 0}]})
    with pytest.raises(InvalidInputError) as info:
        load_prompt_file(path)
    assert str(info.value).count(f"references[0], {kind}[0]") == 1, str(info.value)


def test_cli_malformed_prompt_file_exits_2_without_traceback(tmp_path, capsys):
    _reference(tmp_path)
    path = _prompt_file(tmp_path, {"points": [[40, 60]]})
    args = [
        "segment",
        str(tmp_path / "ref.png"),
        "--prompts",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--sam2-checkpoint",
        str(tmp_path / "never-read.pt"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "references[0], points[0]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _segment_with_prompts(tmp_path, prompts) -> list[str]:
    return [
        "segment",
        str(tmp_path / "ref.png"),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--sam2-checkpoint",
        str(tmp_path / "never-read.pt"),
    ]


def test_prompt_file_with_an_endless_integer_is_refused(tmp_path, capsys):
    _reference(tmp_path)
    path = tmp_path / "long.json"
    row = "7" * 5000  # beyond the 4300 digits Python reads as an int
    text = json.dumps({"references": [{"image": "ref.png", "points": [{"row": 0, "col": 3}]}]})
    path.write_text(text.replace('"row": 0', f'"row": {row}'))
    with pytest.raises(InvalidInputError, match="integer of 5000 digits.*at most 4300 digits"):
        load_prompt_file(path)
    assert main(_segment_with_prompts(tmp_path, path)) == 2
    err = capsys.readouterr().err
    assert "5000 digits" in err and str(path) in err and "Traceback" not in err


def test_prompt_file_larger_than_the_limit_is_refused_unread(tmp_path, monkeypatch, capsys):
    import napari_sansa.dataset.references as references

    _reference(tmp_path)
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:  # sparse: 65 MiB that take no disk space
        fh.truncate(65 * 1024 * 1024)
    with pytest.raises(InvalidInputError, match="huge.json is larger than 64 MiB"):
        load_prompt_file(path)
    assert main(_segment_with_prompts(tmp_path, path)) == 2
    assert "larger than 64 MiB" in capsys.readouterr().err
    # the limit is on the file, whatever it holds
    path = _prompt_file(tmp_path, {"points": [{"row": 3, "col": 3}]})
    assert len(load_prompt_file(path)) == 1
    monkeypatch.setattr(references, "MAX_PROMPT_FILE_BYTES", 20)
    with pytest.raises(InvalidInputError, match="larger than 20 bytes"):
        load_prompt_file(path)


def test_prompt_file_that_is_a_device_or_a_pipe_is_refused_without_reading(tmp_path, capsys):
    import os
    import threading

    _reference(tmp_path)
    with pytest.raises(InvalidInputError, match="a device or socket, not a regular file"):
        load_prompt_file("/dev/null")
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def release():
        """Opens the pipe for writing once a reader waits on it (a reader blocked in
        open() would otherwise wait forever), so that this test fails, not hangs."""
        while not stop.wait(0.2):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                continue
            os.close(fd)
            return

    helper = threading.Thread(target=release, daemon=True)
    helper.start()
    try:
        with pytest.raises(InvalidInputError, match=r"a pipe \(FIFO\), not a regular file"):
            load_prompt_file(fifo)
        assert main(_segment_with_prompts(tmp_path, fifo)) == 2
    finally:
        stop.set()
        helper.join()
    err = capsys.readouterr().err
    assert "pipe (FIFO)" in err and "Traceback" not in err


def test_cli_prompts_from_dev_zero_is_refused_at_once(tmp_path):
    """In a process limited to 2 GB of memory: reading /dev/zero whole would fail there."""
    import resource

    _reference(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "napari_sansa.cli", *_segment_with_prompts(tmp_path, "/dev/zero")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert proc.returncode == 2, proc.stderr
    assert "/dev/zero is a device or socket, not a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the command line: model files and output --------------------------------------------------
def _capture_segment_dataset(monkeypatch):
    import napari_sansa.dataset as dataset_api

    seen = {}

    def fake(targets, references, out, options=None, *, model, **kwargs):
        seen["model"] = model
        return SimpleNamespace(
            done=0, skipped=0, failed=[], seconds=0.0, frames=0, csv=Path(out) / "scores.csv"
        )

    monkeypatch.setattr(dataset_api, "segment_dataset", fake)
    return seen


def test_relative_checkpoint_paths_are_made_absolute(tmp_path, monkeypatch):
    """Dask workers run in another working directory: they get absolute paths."""
    _reference(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "sam2.pt").write_bytes(b"")
    (tmp_path / "w" / "adapters.pth").write_bytes(b"")
    seen = _capture_segment_dataset(monkeypatch)
    monkeypatch.chdir(tmp_path)
    args = ["segment", "ref.png", "-r", "ref.png", "ref_labels.png", "--out", "out"]
    args += ["--sam2-checkpoint", "w/sam2.pt", "--adapter-checkpoint", "w/adapters.pth"]
    assert main(args) == 0
    source = seen["model"]
    for given, name in [
        (source.sam2_checkpoint, "sam2.pt"),
        (source.adapter_checkpoint, "adapters.pth"),
    ]:
        assert Path(given).is_absolute() and Path(given) == tmp_path / "w" / name


def test_config_without_sam2_checkpoint_is_a_usage_error(tmp_path, monkeypatch, capsys):
    _reference(tmp_path)
    seen = _capture_segment_dataset(monkeypatch)
    args = ["segment", str(tmp_path / "ref.png"), "-r", str(tmp_path / "ref.png")]
    args += [str(tmp_path / "ref_labels.png"), "--out", str(tmp_path / "out")]
    assert main([*args, "--config", "sam2_hiera_t"]) == 2
    err = capsys.readouterr().err
    assert "--config needs --sam2-checkpoint" in err and "--model" in err
    assert "model" not in seen  # nothing ran, no model was fetched


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(200), b"hello, weights\n"])
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content):
    from napari_sansa.core.errors import CheckpointError
    from napari_sansa.core.models.checkpoints import read_checkpoint

    path = tmp_path / "not-weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, "SAM2 checkpoint")
    text = str(info.value)
    assert str(path) in text and "is not a PyTorch checkpoint" in text, text
    assert "Python objects" not in text and "KeyError" not in text, text


def test_offline_and_unknown_model_messages_name_the_cli_flags(tmp_path, monkeypatch):
    from napari_sansa.core.errors import ModelNotFoundError
    from napari_sansa.core.models.registry import get_model_spec, resolve_files

    monkeypatch.setenv("NAPARI_SANSA_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError) as info:
        resolve_files(get_model_spec("sansa-universal"), download=False)
    for text in (str(info.value), str(pytest.raises(InvalidInputError, get_model_spec, "x").value)):
        assert "--sam2-checkpoint" in text and "--adapter-checkpoint" in text, text
        assert "sam2_checkpoint=" in text, text


def test_models_listing_into_a_closed_pipe_exits_quietly(monkeypatch, capsys):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["models", "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_models_listing_piped_into_head_has_no_traceback():
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_sansa.cli", "models", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
