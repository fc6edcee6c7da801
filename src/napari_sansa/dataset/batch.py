"""Whole datasets, headless: folders of images and TIFF stacks in, label images out.

``segment_dataset`` is the Python form of ``napari-sansa segment``. It is
resumable (outputs already written are skipped), every output is written
atomically (temporary file, then rename), one unreadable image is reported and
listed in ``scores.csv`` rather than stopping the run (unless ``strict``), and
with a ``dask.distributed.Client`` the targets are spread over a cluster: each
worker loads the model once, the references are decoded once and shared.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_sansa.dataset.io import (
    IMAGE_SUFFIXES,
    PARTIAL,
    TiffStack,
    open_target,
    read_image,
    read_tiff_description,
    write_tiff_atomic,
)
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import _check_range, check_image, image_hw
from napari_sansa.core.prompts import Box, Mask, Points, Reference, Scribble, check_label
from napari_sansa.core.models.source import ModelSource

__all__ = [
    "BatchReport",
    "DiskFullError",
    "ModelSource",
    "Target",
    "discover_targets",
    "load_prompt_file",
    "load_reference_pair",
    "segment_dataset",
]

log = logging.getLogger(__name__)

RUN_FILE = Path(".napari-sansa") / "run.json"
CSV_NAME = "scores.csv"
PROB_SUFFIX = "_probabilities"


class DiskFullError(OSError):
    """The output disk filled up; everything written so far is complete and valid."""


# -- the model, as workers reload it ------------------------------------------------------
_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(source: ModelSource):
    """The model of ``source``, loaded once per process and kept (Dask workers)."""
    with _MODELS_LOCK:
        if source not in _MODELS:
            _MODELS[source] = source.load()
        return _MODELS[source]


# -- targets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One unit of work: an image file, or a TIFF stack labelled as one output stack."""

    source: str
    output: str  # relative path of the label image in the output folder
    kind: str = "image"  # "image" or "stack"
    frames: int = 1

    @property
    def prob_output(self) -> str:
        p = Path(self.output)
        return str(p.with_name(p.stem + PROB_SUFFIX + p.suffix))


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def discover_targets(inputs, out, probabilities: bool = True) -> list[Target]:
    """Targets from files and folders (recursively; hidden files and folders skipped).

    Two targets whose outputs would be the same file are refused (their probability
    files too when ``probabilities``), and so is an output that is an input."""
    out = Path(out).expanduser().resolve()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    targets: list[Target] = []
    for given in inputs:
        root = Path(given).expanduser()
        if not root.exists():
            raise InvalidInputError(f"{root} does not exist")
        root = root.resolve()
        if root.is_dir():
            if _inside(out, root):
                raise InvalidInputError(
                    f"the output folder {out} is inside the input folder {root}: outputs would "
                    "be read as inputs on the next run; choose an --out outside it"
                )
            files = [
                f
                for f in root.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
            ]
            found = [(f, f.relative_to(root)) for f in sorted(files, key=_natural_key)]
            if not found:
                raise InvalidInputError(
                    f"no images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
        else:
            if root.suffix.lower() not in IMAGE_SUFFIXES:
                raise InvalidInputError(
                    f"{root} is not an image file napari-sansa reads "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            found = [(root, Path(root.name))]
        for f, rel in found:
            output = str(rel.with_suffix(".tif"))
            kind, frames = "image", 1
            if f.suffix.lower() in (".tif", ".tiff"):
                try:
                    kind, stack = open_target(f)
                except InvalidInputError:
                    kind, stack = "image", None  # reported as unreadable when processed
                if kind == "stack":
                    frames = len(stack)
                    stack.close()
            targets.append(Target(str(f), output, kind, frames))
    seen: dict[str, str] = {}
    for t in targets:
        for o in (t.output, t.prob_output) if probabilities else (t.output,):
            if o in seen and seen[o] != t.source:
                raise InvalidInputError(
                    f"{seen[o]} and {t.source} would both be written to {out / o}; rename one "
                    "of them or segment them into separate --out folders"
                )
            seen[o] = t.source
    _check_outputs_are_not_inputs(targets, out)
    return targets


def _check_outputs_are_not_inputs(targets, out: Path) -> None:
    """Refuse outputs that would replace one of the input images (same path or same file)."""
    by_path: dict[str, str] = {}
    by_id: dict[tuple, str] = {}
    for t in targets:
        src = Path(t.source)
        by_path[str(src.resolve())] = t.source
        with contextlib.suppress(OSError):
            st = src.stat()
            by_id[(st.st_dev, st.st_ino)] = t.source
    for t in targets:
        for o in (t.output, t.prob_output):
            path = out / o
            hit = by_path.get(str(path.resolve()))
            if hit is None:
                with contextlib.suppress(OSError):
                    st = path.stat()
                    hit = by_id.get((st.st_dev, st.st_ino))
            if hit is not None:
                what = "that image itself" if hit == t.source else f"the input image {hit}"
                raise InvalidInputError(
                    f"the output {path} of {t.source} would replace {what}: choose another "
                    "--out, a folder that holds none of the input images"
                )


# -- references ---------------------------------------------------------------------------
def _label_masks(labels: np.ndarray, what: str, hw) -> list[Mask]:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        kind = " (a color image)" if labels.ndim == 3 and labels.shape[-1] in (3, 4) else ""
        raise InvalidInputError(
            f"{what} must be a single-channel label image (0 = background, 1, 2, ... = class "
            f"ids): grayscale or palette PNG, or TIFF; it has shape {labels.shape}{kind}"
        )
    if tuple(labels.shape) != tuple(hw):
        raise InvalidInputError(
            f"{what} is {labels.shape[0]}x{labels.shape[1]} but its image is {hw[0]}x{hw[1]}: "
            "a label image must have its image's size"
        )
    if labels.dtype.kind == "f" and (
        not np.isfinite(labels).all() or not np.equal(np.mod(labels, 1), 0).all()
    ):
        raise InvalidInputError(f"{what} holds non-integer values; class ids must be integers")
    if labels.dtype.kind not in "biuf":
        raise InvalidInputError(f"{what} has dtype {labels.dtype}; use an integer label image")
    classes = [int(c) for c in np.unique(labels) if c != 0]
    if not classes:
        raise InvalidInputError(f"{what} is empty (no nonzero pixel): label at least one object")
    if min(classes) < 0:
        raise InvalidInputError(f"{what} holds negative values; class ids are 1, 2, ...")
    return [Mask(labels == c, label=c) for c in classes]


def load_reference_pair(image_path, labels_path) -> Reference:
    """A reference from an image file and its label image (nonzero value = class id)."""
    from napari_sansa.dataset.io import read_label_image

    image = read_image(image_path)
    hw = image_hw(image, f"reference image {image_path}")
    masks = _label_masks(read_label_image(labels_path), f"the label image {labels_path}", hw)
    return Reference(image, masks)


def load_prompt_file(path) -> list[Reference]:
    """References with points, boxes, scribbles (and optional label images) from JSON.

    ``{"references": [{"image": "ref.png", "labels": "ref_labels.png",
    "points": [{"row": 10, "col": 20, "label": 1, "positive": true}],
    "boxes": [{"box": [r0, c0, r1, c1], "label": 2}],
    "scribbles": [{"path": [[r, c], ...], "label": 3}]}]}``; paths are relative to the
    JSON file; ``label`` defaults to 1 and ``positive`` to true. Every part is checked:
    an error names the file, the entry (``references[0], points[1]``) and the form
    expected there; unknown keys are refused rather than ignored.
    """
    import numbers

    from napari_sansa.dataset.io import read_label_image

    path = Path(path)
    forms = {
        "points": '{"row": ROW, "col": COL} (optionally "label": 1 and "positive": true)',
        "boxes": '{"box": [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL]} (optionally "label": 1)',
        "scribbles": '{"path": [[ROW, COL], [ROW, COL], ...]} (optionally "label": 1)',
    }
    entry_keys = ("image", "labels", "points", "boxes", "scribbles")
    prompt_keys = {
        "points": ("row", "col", "label", "positive"),
        "boxes": ("box", "label"),
        "scribbles": ("path", "label"),
    }
    see = "see the prompt file format in docs/cli.md"

    def shown(value) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    def check_keys(obj: dict, allowed, where: str) -> None:
        unknown = [k for k in obj if k not in allowed]
        if unknown:
            raise InvalidInputError(
                f"{where} has unknown key(s) {', '.join(map(shown, unknown))}; the keys there "
                f"are {', '.join(map(shown, allowed))} ({see})"
            )

    def number(value, name: str, where: str) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        try:
            ok = ok and bool(np.isfinite(float(value)))
        except OverflowError:
            ok = False
        if not ok:
            raise InvalidInputError(
                f'{where}: "{name}" must be a finite number, got {shown(value)}'
            )
        return float(value)

    def pairs(value, name: str, where: str) -> list:
        ok = isinstance(value, list) and value
        ok = ok and all(isinstance(v, list) and len(v) == 2 for v in value)
        if not ok:
            raise InvalidInputError(
                f'{where}: "{name}" must be a list of [ROW, COL] pairs, e.g. [[20, 100], '
                f"[40, 110]], got {shown(value)}"
            )
        return [[number(r, name, where), number(c, name, where)] for r, c in value]

    def label_of(item: dict, where: str) -> int:
        try:
            return check_label(item.get("label", 1))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None

    def file_name(entry: dict, key: str, where: str, required: bool):
        value = entry.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            what = "reference image" if key == "image" else "label image"
            raise InvalidInputError(
                f'{where}: "{key}" must be the path of the {what} as a string (relative to '
                f'the JSON file), e.g. "{key}": "ref.png"; got {shown(value)}'
            )
        return value

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"the prompt file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInputError(f"the prompt file {path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"the prompt file {path} is not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("references"), list):
        raise InvalidInputError(
            f'{path} must hold {{"references": [...]}}: an object whose "references" is a '
            f"list of references ({see}); got {shown(data)}"
        )
    check_keys(data, ("references",), path)
    refs = []
    for i, entry in enumerate(data["references"]):
        where = f"{path}, references[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(
                f'{where} must be an object such as {{"image": "ref.png", "points": [...]}}, '
                f"got {shown(entry)}"
            )
        check_keys(entry, entry_keys, where)
        image_name = file_name(entry, "image", where, required=True)
        labels_name = file_name(entry, "labels", where, required=False)
        items = {}
        for kind in ("points", "boxes", "scribbles"):
            value = entry.get(kind)
            if value is None:
                value = []
            if not isinstance(value, list):
                raise InvalidInputError(
                    f'{where}: "{kind}" must be a list of {forms[kind]}, got {shown(value)}'
                )
            for j, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidInputError(
                        f"{where}, {kind}[{j}] must be {forms[kind]}, got {shown(item)}"
                    )
                check_keys(item, prompt_keys[kind], f"{where}, {kind}[{j}]")
            items[kind] = value
        try:
            image = read_image(path.parent / image_name)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        hw = image_hw(image, f"reference image {image_name}")
        prompts: list = []
        if labels_name is not None:
            lab = path.parent / labels_name
            prompts += _label_masks(read_label_image(lab), f"the label image {lab}", hw)
        clicks: dict[int, tuple[list, list]] = {}  # clicks of one class form one prompt
        for j, p in enumerate(items["points"]):
            pw = f"{where}, points[{j}]"
            for key in ("row", "col"):
                if key not in p:
                    raise InvalidInputError(f'{pw} lacks "{key}": give {forms["points"]}')
            row, col = number(p["row"], "row", pw), number(p["col"], "col", pw)
            positive = p.get("positive", True)
            if not isinstance(positive, bool):
                raise InvalidInputError(
                    f'{pw}: "positive" must be true or false (without quotes), got '
                    f"{shown(positive)}"
                )
            coords, flags = clicks.setdefault(label_of(p, pw), ([], []))
            coords.append([row, col])
            flags.append(positive)
        try:
            for label, (coords, flags) in clicks.items():
                prompts.append(Points(coords, label=label, positive=flags))
        except InvalidInputError as exc:
            raise InvalidInputError(f'{where}, "points": {exc}') from None
        for j, b in enumerate(items["boxes"]):
            bw = f"{where}, boxes[{j}]"
            box = b.get("box")
            if not isinstance(box, list) or len(box) != 4:
                raise InvalidInputError(
                    f'{bw}: "box" must be 4 numbers [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL], got '
                    f"{shown(box)}"
                )
            corners = tuple(number(v, "box", bw) for v in box)
            try:
                prompts.append(Box(corners, label=label_of(b, bw)))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{bw}: {exc}") from None
        for j, sc in enumerate(items["scribbles"]):
            sw = f"{where}, scribbles[{j}]"
            vertices = pairs(sc.get("path"), "path", sw)
            try:
                prompts.append(Scribble(vertices, label=label_of(sc, sw)))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{sw}: {exc}") from None
        try:
            refs.append(Reference(image, prompts))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    if not refs:
        raise InvalidInputError(f"{path} lists no references: add at least one ({see})")
    return refs


def _references_digest(refs: list[Reference]) -> str:
    h = hashlib.sha256()
    for r in refs:
        h.update(np.ascontiguousarray(np.asarray(r.image)).tobytes())
        h.update(str(np.shape(r.image)).encode())
        for p in r.prompts:
            h.update(type(p).__name__.encode() + str(p.label).encode())
            for arr in (getattr(p, a, None) for a in ("mask", "coords", "positive", "path")):
                if arr is not None:
                    h.update(np.ascontiguousarray(arr).tobytes())
            if isinstance(p, Box):
                h.update(str(p.box).encode())
    return h.hexdigest()


# -- one run ------------------------------------------------------------------------------
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


@dataclass
class BatchReport:
    """What a run did. ``failed`` lists ``(source, message)``; ``blank`` lists the
    constant frames of stacks, labelled all 0, as ``(source, frame, message)``."""

    out: Path
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)
    blank: list = field(default_factory=list)  # (source, frame, message) of blank frames
    frames: int = 0
    seconds: float = 0.0
    csv: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


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


# -- outputs already there -----------------------------------------------------------------
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


def _work(items, done: set, run: RunSettings) -> list:
    """The targets to compute. A sequence (sequential mode) is computed from its start up
    to its last unfinished image, so that each image sees the same earlier images as in
    an uninterrupted run; its finished outputs are not written again."""
    if run.mode != "sequential":
        return [t for t in items if t.output not in done]
    images = [t for t in items if t.kind == "image"]
    missing = [i for i, t in enumerate(images) if t.output not in done]
    seq = images[: missing[-1] + 1] if missing else []
    return seq + [t for t in items if t.kind == "stack" and t.output not in done]


class _Writer:
    """Writes outputs on a background thread, so the model never waits for the disk.

    At most ``depth`` writes wait; an error of a write (a full disk) is raised by the
    next ``submit`` or by ``finish``.
    """

    def __init__(self, depth: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-sansa-write")
        self._waiting: deque = deque()
        self._depth = depth

    def submit(self, fn, *args) -> None:
        while self._waiting and (len(self._waiting) >= self._depth or self._waiting[0].done()):
            self._waiting.popleft().result()
        self._waiting.append(self._pool.submit(fn, *args))

    def finish(self) -> None:
        try:
            while self._waiting:
                self._waiting.popleft().result()
        finally:
            self._pool.shutdown(wait=True)


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
    )


def _process_images(model, memory, items, out, run, strict, rows, on_frame, keep=frozenset()):
    """Stream image targets through the model; unreadable ones are reported and skipped.

    Images are read by the model's prefetch threads; outputs are written by a writer
    thread. If the model itself refuses an image, that image is reported and the
    stream starts again after it. Targets whose output is in ``keep`` are computed
    (for the memory of a sequence) but their finished outputs are not written again.
    """
    failed: dict[str, dict] = {}  # by source: a read-ahead image may be read twice
    unreadable: list = []  # strict: the image whose reading stopped the run
    passed: set = set()  # finished images (in ``keep``) that cannot be read any more
    remaining = list(items)
    writer = _Writer()

    def write(t, pred):
        _write_image(t, pred, out, run, rows)
        on_frame(t, 1)

    try:
        while remaining:
            todo, remaining = remaining, []
            fed: list = []  # targets handed to the model, in order

            def frames(todo=todo, fed=fed):
                for t in todo:
                    try:
                        img = read_image(t.source)
                        check_image(img, f"image {t.source}")
                    except InvalidInputError as exc:
                        if t.output in keep:  # finished before: its output stays as it is
                            if t.source not in passed:
                                passed.add(t.source)
                                on_frame(t, 1)
                            continue
                        if t.source not in failed:
                            failed[t.source] = _row(t, "failed", str(exc))
                            on_frame(t, 1)
                        if strict:
                            unreadable.append(t)
                            raise
                        continue
                    fed.append(t)
                    yield img

            done = 0
            try:
                for pred in _predictions(model, memory, frames(), run):
                    if fed[done].output in keep:
                        on_frame(fed[done], 1)
                    else:
                        writer.submit(write, fed[done], pred)
                    done += 1
            except InvalidInputError as exc:  # an image that passed the checks still failed
                if unreadable or done >= len(fed):
                    raise
                bad = fed[done]
                if bad.output not in keep:
                    failed[bad.source] = _row(bad, "failed", str(exc))
                on_frame(bad, 1)
                if strict:
                    raise
                remaining = todo[todo.index(bad) + 1 :]
    finally:
        writer.finish()
        rows.extend(failed.values())


def _write_image(t: Target, pred, out: Path, run: RunSettings, rows):
    classes = list(pred.classes)
    scores = {c: pred.scores[c] for c in classes}
    labels = pred.labels
    areas = {c: int((labels == c).sum()) for c in classes}
    final = out / t.output
    try:
        if run.probabilities:
            probs = np.stack([pred.probabilities[c] for c in classes])
            write_tiff_atomic(
                out / t.prob_output,
                probs,
                probs.shape,
                np.float32,
                _describe(t, run, classes, [scores], [areas], probs.shape),
            )
        write_tiff_atomic(
            final,
            labels,
            labels.shape,
            labels.dtype,
            _describe(t, run, classes, [scores], [areas], labels.shape),
        )
    except OSError as exc:
        _write_failed(exc, final)
    if not run.probabilities:
        _remove_stale_probabilities(t, out)
    rows.append(_row(t, "ok", scores=scores, areas=areas))


def _process_stack(model, memory, t: Target, out, run, strict, rows, on_frame):
    """A TIFF stack in, one label stack out.

    Frames are read one at a time and the label stack is written as they are
    computed; with probabilities, both go to memory-mapped scratch files first so
    that the label stack (the marker of a finished target) is written last. A
    constant (blank) frame is not given to the model: its labels are all 0 and its
    row in ``scores.csv`` says so (with ``strict``, it stops the run).
    """
    from napari_sansa.core.fusion import label_dtype

    try:
        stack = TiffStack(t.source)
    except InvalidInputError as exc:
        rows.append(_row(t, "failed", str(exc)))
        if strict:
            raise
        on_frame(t, t.frames)
        return
    hw = tuple(stack.frame_shape[:2])
    n = len(stack)
    classes = list(memory.classes)
    dtype = label_dtype(max(classes))
    shape = (n, *hw)
    scores: list = []
    areas: list = []
    scratch = out / ".napari-sansa" / hashlib.sha1(t.output.encode()).hexdigest()
    probs = labels = None
    if run.probabilities:
        scratch.mkdir(parents=True, exist_ok=True)
        probs = np.lib.format.open_memmap(
            scratch / "p.npy", mode="w+", dtype=np.float32, shape=(n, len(classes), *hw)
        )
        labels = np.lib.format.open_memmap(scratch / "l.npy", mode="w+", dtype=dtype, shape=shape)

    blank: dict[int, str] = {}  # frame -> why it was labelled 0
    fed: list[int] = []  # the frames handed to the model, in order

    def frames():
        for i in range(n):
            img = stack[i]
            try:
                check_image(img, f"frame {i} of {t.source}")
            except InvalidInputError as exc:
                message = _blank_frame(img, i)
                if message is None:  # "the frame 3 of ..." -> "frame 3 of ..."
                    raise InvalidInputError(re.sub(r"^the frame ", "frame ", str(exc))) from None
                if strict:
                    raise InvalidInputError(f"{message} in {t.source}") from None
                blank[i] = message
                continue
            fed.append(i)
            yield img

    def zeros_until(i):
        while len(scores) < i:
            scores.append({})
            areas.append(dict.fromkeys(classes, 0))
            if probs is not None:
                probs[len(scores) - 1] = 0
            on_frame(t, 1)
            yield np.zeros(hw, dtype)

    def pages():
        preds = _predictions(model, memory, frames(), run)
        for k, pred in enumerate(preds):
            i = fed[k]
            yield from zeros_until(i)
            lab = pred.labels
            scores.append({c: pred.scores[c] for c in classes})
            areas.append({c: int((lab == c).sum()) for c in classes})
            if probs is not None:
                probs[i] = np.stack([pred.probabilities[c] for c in classes])
            on_frame(t, 1)
            yield lab
        yield from zeros_until(n)

    final = out / t.output
    try:
        try:
            if probs is None:
                write_tiff_atomic(
                    final,
                    pages(),
                    shape,
                    dtype,
                    lambda: _describe(t, run, classes, scores, areas, shape, blank),
                )
            else:
                for i, lab in enumerate(pages()):
                    labels[i] = lab
                write_tiff_atomic(
                    out / t.prob_output,
                    probs,
                    probs.shape,
                    np.float32,
                    _describe(t, run, classes, scores, areas, probs.shape, blank),
                )
                write_tiff_atomic(
                    final,
                    labels,
                    shape,
                    dtype,
                    _describe(t, run, classes, scores, areas, shape, blank),
                )
        except OSError as exc:
            _write_failed(exc, final)
    except InvalidInputError as exc:
        rows.append(_row(t, "failed", str(exc)))
        if strict:
            raise
        on_frame(t, n - len(scores))
        return
    finally:
        stack.close()
        probs = labels = None  # release the memory maps before removing their files
        if scratch.exists():
            for f in scratch.iterdir():
                f.unlink(missing_ok=True)
            scratch.rmdir()
    if not run.probabilities:
        _remove_stale_probabilities(t, out)
    if blank:
        log.warning(
            "%s: %d constant frame(s) (%s) labelled all 0; listed in %s",
            t.source,
            len(blank),
            ", ".join(map(str, sorted(blank)[:10])) + (", ..." if len(blank) > 10 else ""),
            CSV_NAME,
        )
    for i, (sc, ar) in enumerate(zip(scores, areas, strict=True)):
        if i in blank:
            rows.append(_row(t, "blank", blank[i], frame=i, areas=ar))
        else:
            rows.append(_row(t, "ok", frame=i, scores=sc, areas=ar))


def _blank_frame(img, i: int) -> str | None:
    """Why frame ``i`` of a stack is blank (every pixel the same value), or None."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    if a.size == 0 or a.dtype.kind not in "biuf":
        return None
    lo, hi = a.min(), a.max()
    if lo != hi or lo != lo:  # varying, or NaN (which is not blank)
        return None
    return f"frame {i} is constant (every pixel is {lo}): nothing to segment, its labels are all 0"


def process_targets(
    model,
    memory,
    targets,
    out,
    run: RunSettings,
    strict=False,
    on_frame=None,
    skip_existing=True,
    rows=None,
):
    """Label ``targets`` into ``out``; return CSV rows. Used locally and on Dask workers.

    Targets whose outputs are already there are not written again, so a task that is
    run again (a resumed run, a worker that died) redoes nothing that was finished. In
    sequential mode the images form one sequence, computed from its start (see
    :func:`_work`). ``rows``: a list to add the rows to (it keeps them if this raises).
    """
    out = Path(out)
    on_frame = on_frame or (lambda t, n: None)
    rows = [] if rows is None else rows
    targets = list(targets)
    done = {t.output for t in targets if skip_existing and _target_done(t, out, run)}
    todo = _work(targets, done, run)
    keep = frozenset(t.output for t in todo if t.output in done)
    i = 0
    while i < len(todo):
        if todo[i].kind == "stack":
            _process_stack(model, memory, todo[i], out, run, strict, rows, on_frame)
            i += 1
            continue
        j = i
        while j < len(todo) and todo[j].kind == "image":
            j += 1
        _process_images(model, memory, todo[i:j], out, run, strict, rows, on_frame, keep)
        i = j
    return rows


# -- Dask ----------------------------------------------------------------------------------
def _prepare_task(
    source: ModelSource, refs, input_size, intensity_range, threshold, tile_size=None, halo=None
):
    model = _cached_model(source)
    return model.prepare_references(
        refs,
        input_size=input_size,
        intensity_range=intensity_range,
        threshold=threshold,
        tile_size=tile_size,
        halo=halo,
    )


def _chunk_task(source: ModelSource, memory, targets, out, run, strict, skip_existing):
    rows: list = []
    try:
        return process_targets(
            _cached_model(source), memory, targets, out, run, strict, None, skip_existing, rows
        )
    except InvalidInputError as exc:  # strict: the client lists the failure in scores.csv
        exc.failed_rows = [r for r in rows if r["status"] == "failed"]
        raise


def _chunks(targets, run: RunSettings, size: int):
    if run.mode == "sequential":
        # order matters within each folder sequence: keep images together, stacks alone
        images = [t for t in targets if t.kind == "image"]
        return ([images] if images else []) + [[t] for t in targets if t.kind == "stack"]
    out, cur = [], []
    for t in targets:
        if t.kind == "stack":
            out.append([t])
            continue
        cur.append(t)
        if len(cur) >= size:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _prepare_dask(client, source, refs, run: RunSettings):
    """The references' memory, prepared on a worker; its errors (model, references) raised."""
    from dask.distributed import wait

    memory = client.submit(
        _prepare_task,
        source,
        refs,
        run.input_size,
        run.intensity_range,
        run.threshold,
        run.tile_size,
        run.halo,
        pure=False,
    )
    wait([memory])
    if memory.status == "error":
        memory.result()  # raises the worker's error
    return memory


def _run_dask(client, source, memory, todo, out, run, strict, chunk_size, bar, skip_existing, rows):
    from dask.distributed import as_completed

    futures = {}
    for chunk in _chunks(todo, run, chunk_size):
        f = client.submit(
            _chunk_task, source, memory, chunk, str(out), run, strict, skip_existing, pure=False
        )
        futures[f] = sum(t.frames for t in chunk)
    try:
        for f in as_completed(list(futures)):
            rows.extend(f.result())
            bar.update(futures[f])
    except BaseException as exc:
        rows.extend(getattr(exc, "failed_rows", []))
        client.cancel(list(futures))
        raise
    return rows


# -- the run manifest and the CSV ----------------------------------------------------------
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
    tmp = run_file.with_name(f".run.json{PARTIAL}")
    try:
        run_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"signature": signature, "settings": settings}, indent=2))
        os.replace(tmp, run_file)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _write_failed(exc, run_file)


def _cleanup_partials(out: Path):
    for p in out.rglob(f"*{PARTIAL}"):
        with contextlib.suppress(OSError):
            p.unlink()


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
    tmp = final.with_name(f".{CSV_NAME}{PARTIAL}")
    try:
        tmp.write_text(buf.getvalue())
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _write_failed(exc, final)
    return final


# -- entry point ---------------------------------------------------------------------------
def segment_dataset(
    targets,
    references,
    out,
    *,
    model="sansa-universal",
    mode: str = "independent",
    threshold: float = 0.5,
    input_size: int | None = 640,
    intensity_range=None,
    probabilities: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int | None = None,
    client=None,
    chunk_size: int = 16,
    progress: bool = True,
    tile_size: int | None = None,
    halo: int | None = None,
) -> BatchReport:
    """Label every target image (files, folders, TIFF stacks) into ``out``.

    ``references``: a list of :class:`~napari_sansa.Reference`. ``model``: a registry
    name, a :class:`ModelSource`, or (local runs only) a loaded model. ``client``: a
    ``dask.distributed.Client`` to spread the work over a cluster. Outputs mirror the
    inputs' folders as TIFF label images (stacks as label stacks); ``scores.csv``
    lists every target with its per-class scores and areas, or why it failed.
    ``tile_size``/``halo``: references and targets larger than a tile are segmented
    by tiles (see :meth:`~napari_sansa.SansaModel.segment_iter`).
    """
    from napari_sansa.core.fusion import check_threshold
    from napari_sansa.core.model import MODES, SansaModel
    from napari_sansa.core.preprocess import check_input_size
    from napari_sansa.core.tiling import TileSpec

    t0 = time.perf_counter()
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    threshold = check_threshold(threshold)
    input_size = check_input_size(input_size)
    tiles = TileSpec.make(tile_size, halo)
    if tiles is not None and mode != "independent":
        raise InvalidInputError("--tile-size works with --mode independent only")
    if isinstance(references, Reference):
        references = [references]
    references = list(references or [])
    if not references:
        raise InvalidInputError(
            "no references: give --reference IMAGE LABELS (or a --prompts JSON file)"
        )
    if intensity_range is not None:
        _check_range(intensity_range)
    out = Path(out).expanduser().resolve()
    items = discover_targets(targets, out, probabilities)
    loaded = None
    if isinstance(model, SansaModel):
        if client is not None:
            raise InvalidInputError("with a Dask client, give the model as a name or a ModelSource")
        loaded = model
        ident = {"model": model.identity}
    else:
        source = ModelSource(name=model) if isinstance(model, str) else model
        if not isinstance(source, ModelSource):
            raise InvalidInputError("model must be a registry name, a ModelSource or a SansaModel")
        # every image is seen once: a feature cache would only cost memory and hashing
        source = replace(source, cache_bytes=0)
        ident = source.identity()
    settings = {
        "model": ident,
        "references": _references_digest(references),
        "mode": mode,
        "threshold": threshold,
        "input_size": input_size,
        "intensity_range": list(intensity_range) if intensity_range is not None else None,
    }
    if tiles is not None:  # only then: untiled runs keep the signature they always had
        settings["tiles"] = [tiles.tile_size, tiles.halo]
    signature = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    _check_run_file(out, signature, settings, items, overwrite)
    run = RunSettings(
        mode,
        threshold,
        input_size,
        tuple(intensity_range) if intensity_range is not None else None,
        probabilities,
        batch_size,
        signature,
        tiles.tile_size if tiles is not None else None,
        tiles.halo if tiles is not None else None,
    )
    # what is finished, checked before anything is loaded or written: a rerun with
    # nothing left to do loads no model, and outputs of other images are never touched
    done = set() if overwrite else {t.output for t in items if _target_done(t, out, run)}
    work = _work(items, done, run)
    report = BatchReport(out, skipped=len(done))
    report.frames = sum(t.frames for t in work)
    rows: list = []
    memory = None
    if work:
        # everything that can fail on bad settings (the model, the references) fails
        # before the run's manifest is written: a corrected command is not refused then
        if client is None:
            if loaded is None:
                loaded = _cached_model(source)
            memory = loaded.prepare_references(
                references,
                input_size=input_size,
                intensity_range=intensity_range,
                threshold=threshold,
                tile_size=run.tile_size,
                halo=run.halo,
            )
        else:
            memory = _prepare_dask(client, source, references, run)
        _write_run_file(out, signature, settings)
        _cleanup_partials(out)
    elif not out.is_dir():  # nothing to label at all
        report.seconds = time.perf_counter() - t0
        return report
    from tqdm.auto import tqdm

    total = sum(t.frames for t in items)
    bar = tqdm(
        total=total,
        initial=total - report.frames,
        unit="img",
        desc="napari-sansa",
        disable=not progress,
        dynamic_ncols=True,
    )
    error = None
    try:
        if work and client is None:
            process_targets(
                loaded,
                memory,
                work,
                out,
                run,
                strict,
                on_frame=lambda t, n: bar.update(n),
                skip_existing=not overwrite,
                rows=rows,
            )
        elif work:
            _run_dask(
                client, source, memory, work, out, run, strict, chunk_size, bar, not overwrite, rows
            )
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        failed = [r for r in rows if r["status"] == "failed"]
        report.failed = [(r["target"], r["message"]) for r in failed]
        report.done = len({r["target"] for r in rows if r["status"] in ("ok", "blank")})
        report.blank = [
            (r["target"], r["frame"], r["message"]) for r in rows if r["status"] == "blank"
        ]
        try:
            report.csv = _write_csv(out, _rows_from_outputs(items, out, signature) + failed)
        except OSError:
            if error is None:
                raise
            # the run already stops on an error (a full disk, ...): report that one
        report.seconds = time.perf_counter() - t0
    return report


def report_dict(report: BatchReport) -> dict:
    d = asdict(report)
    d["out"] = str(report.out)
    d["csv"] = str(report.csv) if report.csv else None
    return d
