"""What a run leaves besides its label images: the records in each output's TIFF
description, the run manifest (``.napari-sansa/run.json``) and ``scores.csv``."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from napari_sansa.core.atomic import write_text_atomic
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.discovery import Target, _natural_key
from napari_sansa.dataset.io import read_tiff_description

RUN_FILE = Path(".napari-sansa") / "run.json"
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


def _row(target: Target, status: str, message: str = "", frame=None, scores=None, areas=None):
    row = {
        "target": target.source,
        "frame": "" if frame is None else frame,
        "output": target.output if status in ("ok", "blank") else "",
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


def _describe(target, run, classes, scores, areas, shape, blank=None):
    from napari_sansa import __version__

    # tifffile reads a JSON description with a "shape" as its own shaped-series metadata
    info = {
        "version": __version__,
        "run": run.signature,
        "source": target.source,
        "classes": list(classes),
        "scores": scores,
        "areas": areas,
    }
    if blank:
        info["blank"] = {str(i): m for i, m in blank.items()}
    return {"shape": list(shape), "napari_sansa": info}


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
    frames = len(info.get("scores") or [])
    if frames != t.frames:
        raise InvalidInputError(
            f"{path} holds {frames} label frame(s) of {t.source}, which now has {t.frames}: "
            "the image changed since; use --overwrite to label it again, or choose another --out"
        )
    return info


def _target_done(t: Target, out: Path, run: RunSettings) -> bool:
    """Whether every output this run asks of ``t`` is there, written by this run's settings.

    Outputs of another image, or files napari-sansa did not write, are an error.
    """
    labels = _existing(t, out / t.output)
    probs = _existing(t, out / t.prob_output) if run.probabilities else None
    return (
        labels is not None
        and labels.get("run") == run.signature
        and (not run.probabilities or (probs is not None and probs.get("run") == run.signature))
    )


def _remove_stale_probabilities(t: Target, out: Path) -> None:
    """Remove ``t``'s probabilities of an earlier run, once its new labels are written
    without probabilities: a probability file always belongs to the labels next to it."""
    path = out / t.prob_output
    if path.is_file():
        info = _record(path)
        if info is not None and _same_source(info.get("source"), t.source):
            with contextlib.suppress(OSError):
                path.unlink()


def _holds_outputs(out: Path) -> bool:
    """Whether ``out`` holds any TIFF besides napari-sansa's own bookkeeping."""
    return any(
        not p.relative_to(out).parts[0].startswith(".napari-sansa") for p in out.rglob("*.tif")
    )


def _check_run_file(out: Path, signature: str, settings: dict, targets, overwrite: bool):
    """Refuse a run whose settings differ from those of the outputs in ``out`` (reads only:
    the manifest is written by :func:`_write_run_file` once the run is ready to start)."""
    run_file = out / RUN_FILE
    if run_file.is_file() and not overwrite:
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("signature") != signature and _holds_outputs(out):
            old = previous.get("settings", {})
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise InvalidInputError(
                f"{out} holds the results of another run (different "
                f"{', '.join(diff) or 'settings'}); "
                "use --overwrite to redo everything there, or choose another --out"
            )
        return
    if not run_file.is_file() and not overwrite:
        clash = [t.output for t in targets if (out / t.output).exists()]
        if clash:
            raise InvalidInputError(
                f"{out / clash[0]} already exists and was not written by napari-sansa in this "
                "folder; use --overwrite to replace such files, or choose another --out"
            )


def _write_run_file(out: Path, signature: str, settings: dict) -> None:
    run_file = out / RUN_FILE
    try:
        write_text_atomic(
            run_file, json.dumps({"signature": signature, "settings": settings}, indent=2)
        )
    except OSError as exc:
        _write_failed(exc, run_file)


def _rows_from_outputs(targets, out: Path, signature: str):
    """The rows of the outputs of this run (labels of each target's own image)."""
    rows = []
    for t in targets:
        path = out / t.output
        if not path.is_file():
            continue
        info = _record(path)
        if info is None or info.get("run") != signature:
            continue
        if not _same_source(info.get("source"), t.source):
            continue
        scores = info.get("scores") or [{}]
        areas = info.get("areas") or [{}] * len(scores)
        blank = info.get("blank") or {}
        for i, (s, a) in enumerate(zip(scores, areas, strict=False)):
            rows.append(
                _row(
                    t,
                    "blank" if str(i) in blank else "ok",
                    blank.get(str(i), ""),
                    frame=i if t.kind == "stack" else None,
                    scores={int(k): v for k, v in s.items()},
                    areas={int(k): v for k, v in a.items()},
                )
            )
    return rows


def _write_csv(out: Path, rows) -> Path:
    keys = ["target", "frame", "output", "status", "message"]
    extra = sorted(
        {k for r in rows for k in r if k not in keys},
        key=lambda k: (k.split("_")[0] != "score", int(k.split("_")[1])),
    )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys + extra, restval="")
    w.writeheader()

    def order(r):  # frames in numeric order
        return _natural_key(Path(r["target"])), -1 if r["frame"] == "" else int(r["frame"])

    for r in sorted(rows, key=order):
        w.writerow(r)
    final = out / CSV_NAME
    try:
        write_text_atomic(final, buf.getvalue())
    except OSError as exc:
        _write_failed(exc, final)
    return final
