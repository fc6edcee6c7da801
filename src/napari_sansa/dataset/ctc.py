"""The Cell Tracking Challenge folder of a target (``--tracks``): napari-sansa's mark in
it, and what may be touched. The folder holds :data:`CTC_MARK`, the input it was written
for and the files napari-sansa writes there (written before them, so that a folder left
by an interrupted run is known); a folder of that name without the mark (the user's) is
never touched, and only the files the mark lists are ever removed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from napari_sansa.core.errors import output_error

#: napari-sansa's mark in a CTC folder it wrote: the input and the files written
CTC_MARK = ".napari-sansa-ctc.json"

__all__ = ["CTC_MARK", "check_ctc_folder", "remove_ctc_folder", "remove_stale_tracks"]


def check_ctc_folder(folder: Path, source: str) -> None:
    """Refuse a CTC folder napari-sansa did not write for ``source`` (never touched)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise output_error(
            f"{folder} is in the way of the Cell Tracking Challenge folder napari-sansa writes "
            f"for {source}: move or rename it, or choose another {{out}}",
            folder,
        )
    if not folder.exists():
        return
    mark = _read_mark(folder)
    if mark is None or mark.get("source") != source:
        raise output_error(
            f"{folder} was not written by napari-sansa for {source}, and napari-sansa writes "
            "the Cell Tracking Challenge result of its tracks there: it is never touched. Move "
            "or rename that folder, or choose another {out}",
            folder,
        )


def _read_mark(folder: Path) -> dict | None:
    try:
        mark = json.loads((folder / CTC_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) else None


def remove_ctc_folder(folder: Path, source: str) -> None:
    """Remove the files napari-sansa wrote in ``folder`` for ``source`` (those its mark
    lists), then the mark and the folder if nothing else is left in it."""
    if folder.is_symlink() or not folder.is_dir():
        return
    mark = _read_mark(folder)
    if mark is None or mark.get("source") != source:
        return  # not ours: never touched
    for name in mark.get("files") or []:
        if isinstance(name, str) and "/" not in name and "\\" not in name:
            (folder / name).unlink(missing_ok=True)
    (folder / CTC_MARK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the user's files are in it: left there
        folder.rmdir()


def remove_stale_tracks(t, out: Path) -> list:
    """``t``'s track stack and CTC folder when napari-sansa wrote them for ``t``: what a
    run without ``--tracks`` removes (the stack as a path to unlink; the folder here)."""
    remove_ctc_folder(out / t.ctc_output, t.source)
    return [(t.tracks_output, "track stack")]
