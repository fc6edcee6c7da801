"""The record napari-sansa keeps with each output (in its file's metadata, see
:mod:`~napari_sansa.dataset.outputs`), and what it decides: whether a target is finished
(same run, same input content), which files are ours, and which are stale.

The run's settings are in :mod:`~napari_sansa.dataset.settings`, the rows of
``scores.csv`` in :mod:`~napari_sansa.dataset.rows`."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError, OptionError, option_flag, output_error
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.outputs import read_record
from napari_sansa.dataset.settings import RunSettings

log = logging.getLogger(__name__)


#: inputs up to this size are hashed (SHA-256) into their outputs' records, so that a
#: resume notices a replaced input even with the same size and modification time
HASHED_INPUT_BYTES = 1 << 20


def source_state(path) -> dict:
    """What identifies the content of an input file: size, modification time and, for
    files up to :data:`HASHED_INPUT_BYTES`, a SHA-256 of the bytes ({} if unreadable)."""
    try:
        st = os.stat(path)
        state = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if st.st_size <= HASHED_INPUT_BYTES:
            with open(path, "rb") as fh:
                state["sha256"] = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return {}
    return state


def _unchanged(recorded, path) -> bool:
    """Whether the input at ``path`` still has the content ``recorded`` when labelled."""
    if not isinstance(recorded, dict) or not recorded:
        return False  # written by napari-sansa 0.1, which kept no state: label again
    now = source_state(path)
    return bool(now) and all(now.get(k) == v for k, v in recorded.items())


def output_record(
    target: Target,
    run: RunSettings,
    classes,
    scores: list,
    areas: list,
    blank: dict | None = None,
    *,
    state: dict | None = None,
    role: str = "labels",
    frames: dict | None = None,
    channels=None,
    objects=None,
) -> dict:
    """napari-sansa's record of one output of ``target``: the version and run that wrote
    it, its input (``state``: :func:`source_state`), its ``role`` ("labels",
    "probabilities", "objects"), the classes and each frame's ``scores`` and ``areas``,
    the ``blank`` frames (frame -> why), a stack's ``frames`` (``{"axes": "TZ", "sizes":
    [...]}``) and the ``channels`` that made each frame, and an object image's table
    (``objects``: an :class:`~napari_sansa.core.measures.ObjectTable`)."""
    from napari_sansa import __version__

    info = {
        "version": __version__,
        "run": run.signature,
        "source": target.source,
        "input": state or {},
        "output": role,
        "classes": list(classes),
        "scores": scores,
        "areas": areas,
    }
    if blank:
        info["blank"] = {str(i): m for i, m in blank.items()}
    if frames is not None:
        info["frames"] = frames
        if channels is not None:
            info["channels"] = channels
    if objects is not None:
        info["objects"] = table_record(objects)
    return info


def table_record(table) -> dict:
    """An :class:`~napari_sansa.core.measures.ObjectTable` as JSON for an object image's
    record (``objects.csv`` is rebuilt from these records, see dataset/objects.py)."""
    return {"columns": list(table.columns), "rows": [list(r.values()) for r in table.rows()]}


def same_source(recorded, source: str) -> bool:
    if recorded == source:
        return True
    try:
        return recorded is not None and os.path.samefile(recorded, source)
    except OSError:
        return False


def existing_record(t: Target, path: Path) -> dict | None:
    """The record of ``t``'s output at ``path``: None when absent; an error when the file
    there is not napari-sansa's output of this very target (it is never replaced then)."""
    if not path.is_file():
        return None
    info = read_record(path)
    if info is None:
        raise output_error(
            f"{path} already exists and was not written by napari-sansa; [use {{overwrite}} to "
            "replace such files, or ]choose another {out}",
            path,
        )
    recorded = info.get("source")
    if not same_source(recorded, t.source):
        raise output_error(
            f"{path} holds napari-sansa's output for {recorded}, not for {t.source} (another "
            "image with the same relative path, labelled into this folder by an earlier run); "
            "choose another {out} for these images[, or use {overwrite} to replace those "
            "labels]",
            path,
        )
    return info


def done_record(t: Target, out: Path, run: RunSettings) -> dict | None:
    """The record of ``t``'s labels when every output this run asks of ``t`` is there,
    written with this run's settings from the input's present content; else None.

    Outputs of another image, or files napari-sansa did not write, are an error.
    """
    labels = existing_record(t, out / t.output)
    if labels is None or labels.get("run") != run.signature:
        return None
    if run.probabilities:
        probs = existing_record(t, out / t.prob_output)
        if probs is None or probs.get("run") != run.signature:
            return None
    if run.instances is not None:
        objects = existing_record(t, out / t.objects_output)
        if objects is None or objects.get("run") != run.signature:
            return None
    if run.tracks:
        tracks = existing_record(t, out / t.tracks_output)
        if tracks is None or tracks.get("run") != run.signature:
            return None
    if not _unchanged(labels.get("input"), t.source):
        log.info("%s changed since it was labelled: labelling it again", t.source)
        return None
    if _other_frames(labels, t, run):
        log.info(
            "%s was labelled by an earlier version that counted its channels (or every "
            "axis) as frames: labelling it again with its frame axes",
            t.source,
        )
        return None
    return labels


def _other_frames(info: dict, t: Target, run: RunSettings) -> bool:
    """Whether the label stack of ``info``, written by a version that recorded no frame
    axes, has another number of frames than the stack now has (a TCYX stack whose
    channels were frames); 3D stacks, whose frames are the same, stay finished."""
    from napari_sansa.dataset.tiffstack import TiffStack

    frames = len(info.get("scores") or [None])
    if "frames" in info or frames <= 1:
        return False
    try:
        with TiffStack(t.source, run.axes, run.channels) as stack:
            return len(stack) != frames
    except InvalidInputError:
        return True  # labelled again, so that what is wrong with it is reported


def target_done(t: Target, out: Path, run: RunSettings) -> bool:
    return done_record(t, out, run) is not None


def as_recorded(t: Target, record: dict | None) -> Target:
    """``t`` with the kind and frames of its finished output (a TIFF not opened again)."""
    if record is None:
        return t
    frames = len(record.get("scores") or [None])
    return replace(t, kind="stack" if frames > 1 else "image", frames=frames)


class OutputInTheWayError(OptionError):
    """A folder is where an output of a target goes: that target fails, the run goes on."""


def check_output_paths(t: Target, out: Path, run: RunSettings) -> None:
    """Raise :class:`OutputInTheWayError` if an output this run writes for ``t`` would
    replace a folder (it is never touched; the target is listed as failed)."""
    written = [(t.output, "labels")]
    if run.probabilities:
        written.append((t.prob_output, "probabilities"))
    if run.instances is not None:
        written.append((t.objects_output, "object image"))
    if run.tracks:
        written.append((t.tracks_output, "track stack"))
    for name, what in written:
        path = out / name
        if path.is_dir():
            raise OutputInTheWayError(
                "out",
                path,
                template=f"{path} is a folder, where napari-sansa writes the {what} of "
                f"{t.source}: that target was not labelled and the folder was left as it is. "
                "Move or rename the folder and run the same command again, or choose another "
                "{out}",
                default=option_flag,
            )


class StaleProbabilitiesError(InvalidInputError):
    """A probability (or object) file of earlier labels could not be removed (new labels
    not written)."""


def remove_stale_outputs(t: Target, out: Path, run: RunSettings) -> None:
    """Remove ``t``'s outputs of an earlier run that this run does not write, before its
    new labels are written: its probabilities without ``--probabilities``, its object
    image without ``--instances`` (such a file always belongs to the labels next to it).
    Only files napari-sansa wrote for ``t`` are removed; if one cannot be removed, the
    new labels are not written (the old outputs stay together)."""
    stale = []
    if not run.probabilities:
        stale.append((t.prob_output, "probabilities"))
    if run.instances is None:
        stale.append((t.objects_output, "object image"))
    if not run.tracks:
        from napari_sansa.dataset.ctc import remove_stale_tracks

        stale += remove_stale_tracks(t, out)
    for name, what in stale:
        path = out / name
        if not path.is_file():
            continue
        info = read_record(path)
        if info is None or not same_source(info.get("source"), t.source):
            continue  # not ours: never touched
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StaleProbabilitiesError(
                f"{path}, the {what} of earlier labels of {t.source}, cannot be removed "
                f"({exc.strerror or type(exc).__name__}), so the new labels were not written "
                "(they would not match it): remove that file and run the same command again"
            ) from None
