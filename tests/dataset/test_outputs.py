"""The output writer interface (dataset/outputs): TIFF, and another format as one class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sansa.dataset import outputs
from napari_sansa.dataset.outputs import Layout, OutputWriter, TiffWriter, write_output


def test_tiff_writer_records_its_layout_and_record(tmp_path):
    frames = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    path = write_output(
        tmp_path / "s.tif", Layout(frames.shape, np.uint8, "TZYX"), frames, {"a": 1}
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TZYX"
        np.testing.assert_array_equal(tif.series[0].asarray(), frames)
    assert TiffWriter.read_record(path) == {"a": 1}
    assert outputs.read_record(path) == {"a": 1}


def test_a_record_known_after_the_frames_replaces_the_placeholder(tmp_path):
    seen = []

    def frames():
        for i in range(3):
            seen.append(i)
            yield np.full((4, 5), i, np.uint16)

    path = write_output(
        tmp_path / "x.tif", Layout((3, 4, 5), np.uint16), frames(), describe=lambda: {"n": seen}
    )
    assert TiffWriter.read_record(path) == {"n": [0, 1, 2]}
    assert tifffile.imread(path)[2, 0, 0] == 2


def test_an_aborted_output_leaves_the_old_file_and_no_temporary(tmp_path):
    old = write_output(tmp_path / "o.tif", Layout((4, 5), np.uint8), np.ones((4, 5), np.uint8), {})
    before = old.read_bytes()

    def failing():
        yield np.zeros((4, 5), np.uint8)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_output(old, Layout((2, 4, 5), np.uint8), failing(), {"new": True})
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]


def test_a_foreign_file_has_no_record(tmp_path):
    tifffile.imwrite(tmp_path / "user.tif", np.zeros((4, 5), np.uint8), description="mine")
    (tmp_path / "text.tif").write_text("not a TIFF")
    assert outputs.read_record(tmp_path / "user.tif") is None
    assert outputs.read_record(tmp_path / "text.tif") is None
    assert outputs.read_record(tmp_path / "absent.tif") is None


class _NpyWriter(OutputWriter):
    """Another format in one class: an .npy file and its record in a JSON side file."""

    suffix = ".npy"

    def open(self, layout, record=None):
        self.layout, self.record, self.parts = layout, record, []
        return self

    def write(self, frames):
        self.parts = [np.asarray(f, self.layout.dtype) for f in frames]

    def describe(self, record):
        self.record = record

    def finish(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.save(self.path, np.stack(self.parts).reshape(self.layout.shape))
        self.path.with_suffix(".json").write_text(json.dumps(self.record))
        return self.path

    def abort(self):
        self.parts = []

    @classmethod
    def read_record(cls, path):
        try:
            return json.loads(path.with_suffix(".json").read_text())
        except OSError:
            return None


def test_another_format_is_one_writer_class(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "WRITER", _NpyWriter)
    monkeypatch.setitem(outputs.WRITERS, ".npy", _NpyWriter)
    data = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = write_output(tmp_path / "sub" / "a.npy", Layout(data.shape, data.dtype), data, {"k": 2})
    tifffile.imwrite(tmp_path / "b.tif", data)
    np.testing.assert_array_equal(np.load(path), data)
    assert outputs.output_files(tmp_path) == [tmp_path / "b.tif", path]
    assert outputs.read_record(path) == {"k": 2}
    assert outputs.read_record(tmp_path / "b.tif") is None
