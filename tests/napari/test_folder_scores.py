"""The widget lists the outputs of earlier runs from ``scores.csv``: a damaged or foreign
file lists nothing (never a traceback in the viewer), and a listed output is always a
file inside the output folder."""

from __future__ import annotations

import pytest

from napari_sansa.napari.folder import FolderRun

HEADER = "target,frame,output,status,message\n"


def _listed(csv_path):
    run = FolderRun(viewer=None)
    run._list_finished(csv_path)
    return run.results


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe" + HEADER.encode(),  # not UTF-8
        HEADER.encode() + b'"' + b"x" * 200_000 + b'",0,a.tif,ok,\n',  # a field over csv's limit
        b"status,message\nok,\n",  # no target column
    ],
)
def test_a_damaged_scores_csv_lists_nothing(tmp_path, content):
    path = tmp_path / "scores.csv"
    path.write_bytes(content)
    assert _listed(path) == []


def test_outputs_outside_the_folder_are_not_listed_as_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.tif").write_bytes(b"labels")
    rows = [f"{tmp_path / 'a.png'},0,a.tif,ok,", f"{tmp_path / 'b.png'},0,../../etc/passwd,ok,"]
    (out / "scores.csv").write_text(HEADER + "\n".join(rows) + "\n")
    results = _listed(out / "scores.csv")
    assert [(r.source.name, r.output) for r in results] == [
        ("a.png", out / "a.tif"),
        ("b.png", None),
    ]


def test_a_file_name_that_is_not_utf8_is_listed(tmp_path):
    """scores.csv keeps such a name's bytes (surrogateescape): the widget lists it too."""
    out = tmp_path / "out"
    out.mkdir()
    name = b"x\xff"
    (out / "x\udcff.tif").write_bytes(b"l")
    row = str(tmp_path).encode() + b"/" + name + b".png,0," + name + b".tif,ok,\n"
    (out / "scores.csv").write_bytes(HEADER.encode() + row)
    results = _listed(out / "scores.csv")
    assert [(r.source.name, r.output) for r in results] == [("x\udcff.png", out / "x\udcff.tif")]
