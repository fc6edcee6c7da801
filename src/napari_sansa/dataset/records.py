"""The record napari-sansa keeps in each output's TIFF description, and what it decides:
whether a target is finished (same run, same input content) and which files are ours."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.io import read_tiff_description

log = logging.getLogger(__name__)

CSV_NAME = "scores.csv"


class DiskFullError(OSError):
    """The output disk filled up; everything written so far is complete and valid."""


@dataclass(frozen=True)
class RunSettings:
    mode: str = "independent"
    threshold: float = 0.5
    input_size: int | None = 640
    intensity_range: tuple | None = None
    probabilities: bool = False
    batch_size: int | None = None
    signature: str = ""
    tile_size: int | None = None  # tiles (napari_sansa.core.tiling); None: untiled
    halo: int | None = None
    objects: object = None  # an ObjectOptions (--instances); None: no object outputs
    axes: str | None = None  # the axes of TIFF targets (--axes); None: from their metadata
    channels: tuple | None = None  # the channels making a frame (--channels); None: (0,)
    sequential_axis: str | None = None  # sequential mode along T or Z; None: the last
    reference_colour: bool | None = None  # the references are all RGB / all gray; None: mixed
    #: polled by the model between steps (``segment_iter(cancel=...)``): True ends the
    #: predictions early; not part of the run's identity, never sent to Dask workers
    cancel: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


def reference_options(run: RunSettings) -> dict:
    """``prepare_references``'s keyword arguments for the run's settings."""
    return {
        "input_size": run.input_size,
        "intensity_range": run.intensity_range,
        "threshold": run.threshold,
        "tile_size": run.tile_size,
        "halo": run.halo,
    }


def _predictions(model, memory, frames, run: RunSettings):
    """The model's predictions of ``frames`` with the run's settings."""
    return model.segment_iter(
        memory,
        frames,
        mode=run.mode,
        threshold=run.threshold,
        batch_size=run.batch_size,
        tile_size=run.tile_size,
        halo=run.halo,
        instances=run.objects or False,
        cancel=run.cancel,
    )


def _table_record(table) -> dict:
    """An :class:`~napari_sansa.core.measures.ObjectTable` as JSON for an objects TIFF's
    record (``objects.csv`` is rebuilt from these records, see dataset/objects.py)."""
    return {"columns": list(table.columns), "rows": [list(r.values()) for r in table.rows()]}


def _row(
    target: Target, status: str, message: str = "", frame=None, scores=None, areas=None, at=None
):
    """A row of ``scores.csv``; ``at``: a stack frame's index per axis, ``{"t": 3, "z": 1}``."""
    row = {
        "target": target.source,
        "frame": "" if frame is None else frame,
        **(at or {}),
        "output": target.output if status in ("ok", "blank", "reference") else "",
        "status": status,
        "message": message,
    }
    for c, s in (scores or {}).items():
        row[f"score_{c}"] = f"{s:.4f}"
    for c, a in (areas or {}).items():
        row[f"area_{c}"] = a
    return row


def _write_failed(err: OSError, path: Path):
    if err.errno == errno.ENOSPC:
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the device while writing {path}; every output written so far is "
            "complete. Free some space and run the same command again to continue",
        ) from None
    raise err


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


def frame_at(info: dict | None, frame) -> dict:
    """A stack frame's index per frame axis, ``{"t": 3, "z": 1}``, from the record of
    the stack's output (``{}`` for outputs of images, of 0.1, which record no axes, and
    of stacks whose one frame axis has no known meaning: its index is the frame's)."""
    layout = (info or {}).get("frames")
    if not isinstance(layout, dict) or frame in ("", None):
        return {}
    axes, sizes = str(layout.get("axes", "")), layout.get("sizes") or []
    if not axes or len(axes) != len(sizes) or (len(axes) == 1 and axes not in "TZ"):
        return {}
    where = np.unravel_index(int(frame), [int(n) for n in sizes])
    return {a.lower(): int(i) for a, i in zip(axes, where, strict=True)}


def _describe(
    target,
    run,
    classes,
    scores,
    areas,
    shape,
    blank=None,
    *,
    state=None,
    role="labels",
    layout=None,
):
    """The JSON description of an output TIFF. ``layout``: a stack's, as a dict of its
    ``axes`` (the output's, e.g. "TZYX"), ``frames`` ({"axes": "TZ", "sizes": [...]})
    and ``channels`` (the channels that made each frame, when the input has some)."""
    from napari_sansa import __version__

    # tifffile reads a JSON description with a "shape" (and "axes") as its own
    # shaped-series metadata: the output's axes are read back as they are written
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
    desc = {"shape": list(shape)}
    if layout:
        desc["axes"] = layout["axes"]
        info["frames"] = layout["frames"]
        if layout.get("channels") is not None:
            info["channels"] = layout["channels"]
    desc["napari_sansa"] = info
    return desc


def _record(path: Path) -> dict | None:
    """What napari-sansa stored in an output file it wrote; None for any other file."""
    desc = read_tiff_description(path)
    info = desc.get("napari_sansa") if isinstance(desc, dict) else None
    return info if isinstance(info, dict) else None


def _same_source(recorded, source: str) -> bool:
    if recorded == source:
        return True
    try:
        return recorded is not None and os.path.samefile(recorded, source)
    except OSError:
        return False


def _existing(t: Target, path: Path) -> dict | None:
    """The record of ``t``'s output at ``path``: None when absent; an error when the file
    there is not napari-sansa's output of this very target (it is never replaced then)."""
    if not path.is_file():
        return None
    info = _record(path)
    if info is None:
        raise InvalidInputError(
            f"{path} already exists and was not written by napari-sansa; use --overwrite to "
            "replace such files, or choose another --out"
        )
    recorded = info.get("source")
    if not _same_source(recorded, t.source):
        raise InvalidInputError(
            f"{path} holds napari-sansa's output for {recorded}, not for {t.source} (another "
            "image with the same relative path, labelled into this folder by an earlier run); "
            "choose another --out for these images, or use --overwrite to replace those labels"
        )
    return info


def _done_record(t: Target, out: Path, run: RunSettings) -> dict | None:
    """The record of ``t``'s labels when every output this run asks of ``t`` is there,
    written with this run's settings from the input's present content; else None.

    Outputs of another image, or files napari-sansa did not write, are an error.
    """
    labels = _existing(t, out / t.output)
    if labels is None or labels.get("run") != run.signature:
        return None
    if run.probabilities:
        probs = _existing(t, out / t.prob_output)
        if probs is None or probs.get("run") != run.signature:
            return None
    if run.objects is not None:
        objects = _existing(t, out / t.objects_output)
        if objects is None or objects.get("run") != run.signature:
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


def _target_done(t: Target, out: Path, run: RunSettings) -> bool:
    return _done_record(t, out, run) is not None


def _as_recorded(t: Target, record: dict | None) -> Target:
    """``t`` with the kind and frames of its finished output (a TIFF not opened again)."""
    if record is None:
        return t
    frames = len(record.get("scores") or [None])
    return replace(t, kind="stack" if frames > 1 else "image", frames=frames)


class OutputInTheWayError(InvalidInputError):
    """A folder is where an output of a target goes: that target fails, the run goes on."""


def check_output_paths(t: Target, out: Path, run: RunSettings) -> None:
    """Raise :class:`OutputInTheWayError` if an output this run writes for ``t`` would
    replace a folder (it is never touched; the target is listed as failed)."""
    written = [(t.output, "labels")]
    if run.probabilities:
        written.append((t.prob_output, "probabilities"))
    if run.objects is not None:
        written.append((t.objects_output, "object image"))
    for name, what in written:
        path = out / name
        if path.is_dir():
            raise OutputInTheWayError(
                f"{path} is a folder, where napari-sansa writes the {what} of {t.source}: "
                "that target was not labelled and the folder was left as it is. Move or "
                "rename the folder and run the same command again, or choose another --out"
            )


class StaleProbabilitiesError(InvalidInputError):
    """A probability (or object) file of earlier labels could not be removed (new labels
    not written)."""


def _remove_stale_outputs(t: Target, out: Path, run: RunSettings) -> None:
    """Remove ``t``'s outputs of an earlier run that this run does not write, before its
    new labels are written: its probabilities without ``--probabilities``, its object
    image without ``--instances`` (such a file always belongs to the labels next to it).
    Only files napari-sansa wrote for ``t`` are removed; if one cannot be removed, the
    new labels are not written (the old outputs stay together)."""
    stale = []
    if not run.probabilities:
        stale.append((t.prob_output, "probabilities"))
    if run.objects is None:
        stale.append((t.objects_output, "object image"))
    for name, what in stale:
        path = out / name
        if not path.is_file():
            continue
        info = _record(path)
        if info is None or not _same_source(info.get("source"), t.source):
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
