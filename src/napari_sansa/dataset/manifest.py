"""The run manifest (``.napari-sansa/run.json``) and ``scores.csv``.

``scores.csv`` is rebuilt at the end of every run from the outputs in the folder, so it
lists every target labelled there so far (by any run with these settings), each once:
a target that failed in this run has its failure row only. napari-sansa replaces only a
``scores.csv`` it wrote itself (it keeps the SHA-256 of what it wrote); any other file
of that name in ``--out`` is refused, never replaced.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from napari_sansa.core.atomic import write_bytes_atomic, write_text_atomic
from napari_sansa.core.errors import output_error
from napari_sansa.core.jsonfile import read_json
from napari_sansa.dataset.discovery import PROB_SUFFIX, Target, natural_key
from napari_sansa.dataset.outputs import output_files, read_record, write_failed
from napari_sansa.dataset.records import same_source
from napari_sansa.dataset.rows import CSV_NAME, frame_at, score_row

RUN_FILE = Path(".napari-sansa") / "run.json"
CSV_DIGESTS = Path(".napari-sansa") / "scores.json"
KEYS = ["target", "frame", "output", "status", "message"]
#: rows of earlier runs kept as they are when their targets are not in this run
KEPT_STATUSES = ("failed", "reference")


def _holds_outputs(out: Path) -> bool:
    """Whether ``out`` holds any output file besides napari-sansa's own bookkeeping."""
    return any(
        not p.relative_to(out).parts[0].startswith(".napari-sansa")
        for p in output_files(out, sort=False)
    )


def settings_signature(settings: dict) -> str:
    """The signature of a run's settings: what its outputs and ``run.json`` record."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _load_run_file(out: Path) -> dict | str:
    """``run.json`` of ``out`` (``{}`` when there is none), or why it cannot be read."""
    try:
        record = read_json(out / RUN_FILE)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except ValueError as exc:  # not JSON, not UTF-8, too large or nested too deep
        return f"not JSON: {exc}"
    ok = isinstance(record, dict) and isinstance(record.get("signature"), str)
    if not ok or not isinstance(record.get("settings", {}), dict):
        return "it is not a run record of napari-sansa: no signature and settings"
    return record


def read_run_file(out: Path) -> dict:
    """``run.json`` of ``out`` (``{}`` when there is none or it cannot be read)."""
    record = _load_run_file(out)
    return record if isinstance(record, dict) else {}


def recorded_with(out: Path, settings: dict) -> bool:
    """Whether ``out``'s ``run.json`` was written by a run with these ``settings``."""
    return read_run_file(out).get("signature") == settings_signature(settings)


def _differences(old: dict, new: dict) -> list[str]:
    """The settings that differ, by name; the model's parts too when both runs describe
    it by the same parts (e.g. ``model (config)``: a config named in one, not the other)."""
    diff = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            key += f" ({', '.join(k for k in sorted(a) if a[k] != b[k])})"
        diff.append(key)
    return diff


def check_run_file(out: Path, signature: str, settings: dict, targets, overwrite: bool, kept=()):
    """Refuse a run whose settings differ from those of the outputs in ``out`` (reads only:
    the manifest is written by :func:`write_run_file` once the run is ready to start)."""
    run_file = out / RUN_FILE
    if run_file.is_file() and not overwrite:
        previous = _load_run_file(out)
        if isinstance(previous, str):  # damaged: which settings made the outputs is unknown
            if _holds_outputs(out):
                raise output_error(
                    f"{run_file}, the record of the settings the outputs in {out} were made "
                    f"with, cannot be read ({previous}), so this run cannot tell whether they "
                    "are its own: [use {overwrite} to redo everything there (which writes that "
                    "record anew), or ]choose another {out}",
                    out,
                )
            return
        if previous.get("signature") != signature and _holds_outputs(out):
            before = previous.get("settings")
            diff = _differences(before if isinstance(before, dict) else {}, settings)
            raise output_error(
                f"{out} holds the results of another run (different "
                f"{', '.join(diff) or 'settings'}); "
                "[use {overwrite} to redo everything there, or ]choose another {out}",
                out,
            )
        return
    if not run_file.is_file() and not overwrite:
        clash = [t for t in targets if t.output not in kept and (out / t.output).exists()]
        clash.sort(key=lambda t: not (out / t.output).is_dir())  # a folder first: see below
        if clash and (out / clash[0].output).is_dir():  # --overwrite never replaces it
            raise output_error(
                f"{out / clash[0].output} is a folder, where napari-sansa writes the labels of "
                f"{clash[0].source}; a folder is never replaced[ (not even with {{overwrite}})]: "
                "move or rename it, or choose another {out}",
                out,
            )
        clash = [t.output for t in clash]
        if clash:
            raise output_error(
                f"{out / clash[0]} already exists and was not written by napari-sansa in this "
                "folder; [use {overwrite} to replace such files, or ]choose another {out}",
                out,
            )


def write_run_file(out: Path, signature: str, settings: dict) -> None:
    run_file = out / RUN_FILE
    try:
        write_text_atomic(
            run_file, json.dumps({"signature": signature, "settings": settings}, indent=2)
        )
    except OSError as exc:
        write_failed(exc, run_file)


def run_outputs(out: Path, signature: str, skip=frozenset()):
    """``(path, relative path, record)`` of every output in ``out`` (outside its hidden
    folders) written with this run's settings, except those whose relative path is in
    ``skip``."""
    for path in output_files(out):
        rel = path.relative_to(out)
        if any(part.startswith(".") for part in rel.parts) or str(rel) in skip:
            continue
        info = read_record(path)
        if info is not None and info.get("run") == signature and info.get("source"):
            yield path, rel, info


def _output_rows(out: Path, signature: str, skip=frozenset()) -> list[dict]:
    """The rows of every label image in ``out`` written with this run's settings."""
    rows = []
    for path, rel, info in run_outputs(out, signature, skip):
        role = info.get("output")
        if role in ("probabilities", "objects", "tracks") or (
            role is None and _is_probabilities(path, info)
        ):
            continue
        scores = info.get("scores") or [{}]
        areas = info.get("areas") or [{}] * len(scores)
        blank = info.get("blank") or {}
        t = Target(str(info["source"]), str(rel), "stack" if len(scores) > 1 else "image")
        for i, (s, a) in enumerate(zip(scores, areas, strict=False)):
            rows.append(
                score_row(
                    t,
                    "blank" if str(i) in blank else "ok",
                    blank.get(str(i), ""),
                    frame=i if t.kind == "stack" else None,
                    scores={int(k): v for k, v in s.items()},
                    areas={int(k): v for k, v in a.items()},
                    at=frame_at(info, i) if t.kind == "stack" else None,
                )
            )
    return rows


def _is_probabilities(path: Path, info: dict) -> bool:
    """A probability file of napari-sansa 0.1 (whose records do not say so)."""
    if not path.stem.endswith(PROB_SUFFIX):
        return False
    labels = path.with_name(path.stem[: -len(PROB_SUFFIX)] + path.suffix)
    other = read_record(labels) if labels.is_file() else None
    return other is not None and same_source(other.get("source"), info.get("source"))


def final_rows(out: Path, signature: str, targets, rows, earlier, skip=frozenset()) -> list:
    """The rows of ``scores.csv`` after a run: one entry per target, the truth.

    ``rows``: this run's rows (only its failures and kept references are used: the
    others are read back from the outputs); ``earlier``: the rows of the CSV before.
    """
    now = [r for r in rows if r["status"] in KEPT_STATUSES]
    gone = {r["target"] for r in now}
    result = [r for r in _output_rows(out, signature, skip) if r["target"] not in gone]
    listed = gone | {r["target"] for r in result} | {t.source for t in targets}
    result += [r for r in earlier if r.get("status") in KEPT_STATUSES and r["target"] not in listed]
    return result + now


#: how the text of napari-sansa's CSV files is encoded and read back: file names that
#: are not UTF-8 keep their bytes (Python's file-name decoding), so a rerun finds them
NAME_ERRORS = "surrogateescape"


def _digests(out: Path, digests: Path = CSV_DIGESTS) -> list[str]:
    try:
        known = read_json(out / digests).get("sha256", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [d for d in known if isinstance(d, str)] if isinstance(known, list) else []


def run_tables(out: Path, signature: str, rows, output: str, skip=frozenset()):
    """``(source, info, columns, values)`` of every output of kind ``output`` ("objects",
    "tracks") in ``out`` written with this run's settings, with the table its record keeps
    under that name (its ``columns`` and rows of ``values``); not those of targets that
    failed in this run (``rows``: this run's rows of ``scores.csv``) or in ``skip``."""
    gone = {r["target"] for r in rows if r["status"] in KEPT_STATUSES}
    for _, _, info in run_outputs(out, signature, skip):
        source, table = str(info["source"]), info.get(output)
        if info.get("output") != output or source in gone or not isinstance(table, dict):
            continue
        columns = table.get("columns") or []
        for values in table.get("rows") or []:
            yield source, info, columns, values


def output_sources(out: Path, output: str) -> set[str]:
    """The targets that have an output of kind ``output`` ("objects", "tracks") that
    napari-sansa wrote in ``out`` (outside its hidden folders), whatever its run."""
    found = set()
    for path in output_files(out, sort=False):
        if any(part.startswith(".") for part in path.relative_to(out).parts):
            continue
        info = read_record(path)
        if info is not None and info.get("output") == output and info.get("source"):
            found.add(str(info["source"]))
    return found


def write_owned_csv(out: Path, name: str, digests: Path, keys, rows, order) -> Path:
    """Write ``rows`` (dicts) as the CSV ``name`` with the columns ``keys`` (other keys of
    a row are left out, a missing one is empty), sorted by ``order`` (a key function),
    atomically and known as napari-sansa's (:func:`write_owned`)."""
    from napari_sansa.core.measures import csv_value

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, restval="", extrasaction="ignore")
    w.writeheader()
    for r in sorted(rows, key=order):
        w.writerow({k: csv_value(v) for k, v in r.items()})
    return write_owned(out, name, digests, buf.getvalue())


def prune_owned_csv(out: Path, name: str, digests: Path, output: str, write) -> Path | None:
    """After a run without ``output`` ("objects", "tracks"): drop from napari-sansa's CSV
    ``name`` (``digests``: see :func:`owned_text`) the rows of targets that have no output
    of that kind of napari-sansa's any more, written again by ``write(out, kept rows)``;
    remove the file and its digests when no row is left. Any other file of that name is
    left alone (not napari-sansa's business in a run without ``output``). Returns the
    CSV's path when one remains."""
    from napari_sansa.core.errors import InvalidInputError

    try:
        text = owned_text(out, name, digests)
    except InvalidInputError:
        return None
    if text is None:
        return None
    rows = list(csv.DictReader(io.StringIO(text)))
    there = output_sources(out, output)
    kept = [r for r in rows if r.get("target") in there]
    if len(kept) == len(rows):
        return out / name
    if kept:
        return write(out, kept)
    for path in (name, digests):
        (out / path).unlink(missing_ok=True)
    return None


def owned_text(out: Path, name: str, digests: Path, legacy_keys=None) -> str | None:
    """The text of the file ``name`` that napari-sansa wrote in ``out`` (None if absent);
    an error if that file is not one napari-sansa wrote (it is never replaced then).

    ``digests``: where the SHA-256 of what was written is kept; ``legacy_keys``: the
    header that marks a file of napari-sansa 0.1 (which kept no digests)."""
    path = out / name
    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError:
        data = None
    ours = data is not None and hashlib.sha256(data).hexdigest() in _digests(out, digests)
    if data is not None and not ours and legacy_keys and not (out / digests).exists():
        first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        ours = first.split(",")[: len(legacy_keys)] == list(legacy_keys)
    if not ours:
        raise output_error(
            f"{path} was not written by napari-sansa (or was changed since), and napari-sansa "
            f"writes its {name} there: it is never replaced. Move or rename that file, or "
            "choose another {out}",
            path,
        )
    return data.decode("utf-8", NAME_ERRORS)


def write_owned(out: Path, name: str, digests: Path, text: str) -> Path:
    """Write ``text`` atomically as ``out / name``, known as napari-sansa's (see
    :func:`owned_text`) before it is there: the digests of the last two versions."""
    final = out / name
    # a file name that is not UTF-8 (as os.fsdecode gives it) is written as its bytes
    data = text.encode("utf-8", NAME_ERRORS)
    try:
        known = [hashlib.sha256(data).hexdigest(), *_digests(out, digests)[:1]]
        write_text_atomic(out / digests, json.dumps({"sha256": known}))
        write_bytes_atomic(final, data)
    except OSError as exc:
        write_failed(exc, final)
    return final


def earlier_rows(out: Path) -> list[dict]:
    """The rows of the ``scores.csv`` in ``out`` (none if absent); an error if that file
    is not one napari-sansa wrote (it is never replaced then)."""
    text = owned_text(out, CSV_NAME, CSV_DIGESTS, KEYS)
    return [] if text is None else list(csv.DictReader(io.StringIO(text)))


def axis_columns(rows, known) -> list[str]:
    """The per-axis frame columns of ``rows`` (``t``, ``z``, ...: keys of one lowercase
    letter, see :func:`~napari_sansa.dataset.rows.frame_at`), T and Z first."""
    found = {k for r in rows for k in r if k not in known and len(k) == 1}
    return sorted(found, key=lambda k: ("tz".find(k) % 3, k))


def write_csv(out: Path, rows) -> Path:
    at = axis_columns(rows, KEYS)
    keys = [*KEYS[:2], *at, *KEYS[2:]]
    extra = sorted(
        {k for r in rows for k in r if k not in keys},
        key=lambda k: (k.split("_")[0] != "score", int(k.split("_")[1])),
    )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys + extra, restval="")
    w.writeheader()

    def order(r):  # frames in numeric order
        return natural_key(Path(r["target"])), -1 if r["frame"] == "" else int(r["frame"])

    for r in sorted(rows, key=order):
        w.writerow(r)
    return write_owned(out, CSV_NAME, CSV_DIGESTS, buf.getvalue())
