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
import os
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._io import (
    IMAGE_SUFFIXES,
    PARTIAL,
    TiffStack,
    open_target,
    read_image,
    read_tiff_description,
    write_tiff_atomic,
)
from .core.errors import InvalidInputError
from .core.images import check_image, image_hw
from .core.prompts import Box, Mask, Points, Reference, Scribble, check_label
from .core.source import ModelSource

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


def discover_targets(inputs, out) -> list[Target]:
    """Targets from files and folders (recursively; hidden files and folders skipped)."""
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
        for o in (t.output, t.prob_output):
            if o in seen and seen[o] != t.source:
                raise InvalidInputError(
                    f"{seen[o]} and {t.source} would both be written to {out / o}; rename one "
                    "of them or segment them into separate --out folders"
                )
            seen[o] = t.source
    return targets


# -- references ---------------------------------------------------------------------------
def _label_masks(labels: np.ndarray, what: str, hw) -> list[Mask]:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise InvalidInputError(
            f"{what} must be a single-channel label image (0 = background, 1, 2, ... = class "
            f"ids); it has shape {labels.shape}"
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
    image = read_image(image_path)
    hw = image_hw(image, f"reference image {image_path}")
    masks = _label_masks(read_image(labels_path), f"the label image {labels_path}", hw)
    return Reference(image, masks)


def load_prompt_file(path) -> list[Reference]:
    """References with points, boxes, scribbles (and optional label images) from JSON.

    ``{"references": [{"image": "ref.png", "labels": "ref_labels.png",
    "points": [{"row": 10, "col": 20, "label": 1, "positive": true}],
    "boxes": [{"box": [r0, c0, r1, c1], "label": 2}],
    "scribbles": [{"path": [[r, c], ...], "label": 3}]}]}``; paths are relative to the
    JSON file; ``label`` defaults to 1 and ``positive`` to true.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"the prompt file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("references"), list):
        raise InvalidInputError(f'{path} must hold {{"references": [...]}}')
    refs = []
    for i, entry in enumerate(data["references"]):
        where = f"{path}, references[{i}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise InvalidInputError(f'{where} needs an "image" path')
        image = read_image(path.parent / entry["image"])
        hw = image_hw(image, f"reference image {entry['image']}")
        prompts: list = []
        if entry.get("labels"):
            lab = path.parent / entry["labels"]
            prompts += _label_masks(read_image(lab), f"the label image {lab}", hw)
        clicks: dict[int, tuple[list, list]] = {}  # clicks of one class form one prompt
        try:
            for p in entry.get("points", []):
                coords, positive = clicks.setdefault(check_label(p.get("label", 1)), ([], []))
                coords.append([float(p["row"]), float(p["col"])])
                positive.append(p.get("positive", True))
            for label, (coords, positive) in clicks.items():
                prompts.append(Points(coords, label=label, positive=positive))
            for b in entry.get("boxes", []):
                prompts.append(Box(tuple(b["box"]), label=check_label(b.get("label", 1))))
            for s in entry.get("scribbles", []):
                prompts.append(Scribble(s["path"], label=check_label(s.get("label", 1))))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise InvalidInputError(f"{where}: {exc}") from None
            raise InvalidInputError(f"{where}: a prompt lacks {exc} or is malformed") from None
        try:
            refs.append(Reference(image, prompts))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    if not refs:
        raise InvalidInputError(f"{path} lists no references")
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


@dataclass
class BatchReport:
    """What a run did. ``failed`` lists ``(source, message)``."""

    out: Path
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)
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
        "output": target.output if status == "ok" else "",
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


def _describe(target, run, classes, scores, areas, shape):
    from . import __version__

    # tifffile reads a JSON description with a "shape" as its own shaped-series metadata
    return {
        "shape": list(shape),
        "napari_sansa": {
            "version": __version__,
            "run": run.signature,
            "source": target.source,
            "classes": list(classes),
            "scores": scores,
            "areas": areas,
        },
    }


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


def _process_images(model, memory, items, out, run, strict, rows, on_frame):
    """Stream image targets through the model; unreadable ones are reported and skipped.

    Images are read by the model's prefetch threads; outputs are written by a writer
    thread. If the model itself refuses an image, that image is reported and the
    stream starts again after it.
    """
    failed: dict[str, dict] = {}  # by source: a read-ahead image may be read twice
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
                        if strict:
                            raise
                        if t.source not in failed:
                            failed[t.source] = _row(t, "failed", str(exc))
                            on_frame(t, 1)
                        continue
                    fed.append(t)
                    yield img

            done = 0
            try:
                for pred in model.segment_iter(
                    memory,
                    frames(),
                    mode=run.mode,
                    threshold=run.threshold,
                    batch_size=run.batch_size,
                ):
                    writer.submit(write, fed[done], pred)
                    done += 1
            except InvalidInputError as exc:  # an image that passed the checks still failed
                if strict or done >= len(fed):
                    raise
                bad = fed[done]
                failed[bad.source] = _row(bad, "failed", str(exc))
                on_frame(bad, 1)
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
    rows.append(_row(t, "ok", scores=scores, areas=areas))


def _process_stack(model, memory, t: Target, out, run, strict, rows, on_frame):
    """A TIFF stack in, one label stack out.

    Frames are read one at a time and the label stack is written as they are
    computed; with probabilities, both go to memory-mapped scratch files first so
    that the label stack (the marker of a finished target) is written last.
    """
    from .core.fusion import label_dtype

    try:
        stack = TiffStack(t.source)
    except InvalidInputError as exc:
        if strict:
            raise
        rows.append(_row(t, "failed", str(exc)))
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

    def frames():
        for i in range(n):
            img = stack[i]
            check_image(img, f"frame {i} of {t.source}")
            yield img

    def pages():
        preds = model.segment_iter(
            memory, frames(), mode=run.mode, threshold=run.threshold, batch_size=run.batch_size
        )
        for i, pred in enumerate(preds):
            lab = pred.labels
            scores.append({c: pred.scores[c] for c in classes})
            areas.append({c: int((lab == c).sum()) for c in classes})
            if probs is not None:
                probs[i] = np.stack([pred.probabilities[c] for c in classes])
            on_frame(t, 1)
            yield lab

    final = out / t.output
    try:
        try:
            if probs is None:
                write_tiff_atomic(
                    final,
                    pages(),
                    shape,
                    dtype,
                    lambda: _describe(t, run, classes, scores, areas, shape),
                )
            else:
                for i, lab in enumerate(pages()):
                    labels[i] = lab
                write_tiff_atomic(
                    out / t.prob_output,
                    probs,
                    probs.shape,
                    np.float32,
                    _describe(t, run, classes, scores, areas, probs.shape),
                )
                write_tiff_atomic(
                    final, labels, shape, dtype, _describe(t, run, classes, scores, areas, shape)
                )
        except OSError as exc:
            _write_failed(exc, final)
    except InvalidInputError as exc:
        if strict:
            raise
        rows.append(_row(t, "failed", str(exc)))
        on_frame(t, n - len(scores))
        return
    finally:
        stack.close()
        probs = labels = None  # release the memory maps before removing their files
        if scratch.exists():
            for f in scratch.iterdir():
                f.unlink(missing_ok=True)
            scratch.rmdir()
    for i, (sc, ar) in enumerate(zip(scores, areas, strict=True)):
        rows.append(_row(t, "ok", frame=i, scores=sc, areas=ar))


def process_targets(
    model, memory, targets, out, run: RunSettings, strict=False, on_frame=None, skip_existing=True
):
    """Label ``targets`` into ``out``; return CSV rows. Used locally and on Dask workers.

    Targets whose label output already exists are skipped, so a task that is run
    again (a resumed run, a worker that died) redoes nothing that was finished.
    """
    out = Path(out)
    on_frame = on_frame or (lambda t, n: None)
    rows: list = []
    todo = [t for t in targets if not (skip_existing and (out / t.output).is_file())]
    i = 0
    while i < len(todo):
        if todo[i].kind == "stack":
            _process_stack(model, memory, todo[i], out, run, strict, rows, on_frame)
            i += 1
            continue
        j = i
        while j < len(todo) and todo[j].kind == "image":
            j += 1
        _process_images(model, memory, todo[i:j], out, run, strict, rows, on_frame)
        i = j
    return rows


# -- Dask ----------------------------------------------------------------------------------
def _prepare_task(source: ModelSource, refs, input_size, intensity_range, threshold):
    model = _cached_model(source)
    return model.prepare_references(
        refs, input_size=input_size, intensity_range=intensity_range, threshold=threshold
    )


def _chunk_task(source: ModelSource, memory, targets, out, run, strict, skip_existing):
    return process_targets(
        _cached_model(source), memory, targets, out, run, strict, None, skip_existing
    )


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


def _run_dask(client, source, refs, todo, out, run, strict, chunk_size, bar, skip_existing):
    from dask.distributed import as_completed

    memory = client.submit(
        _prepare_task, source, refs, run.input_size, run.intensity_range, run.threshold, pure=False
    )
    futures = {}
    for chunk in _chunks(todo, run, chunk_size):
        f = client.submit(
            _chunk_task, source, memory, chunk, str(out), run, strict, skip_existing, pure=False
        )
        futures[f] = sum(t.frames for t in chunk)
    rows = []
    try:
        for f in as_completed(list(futures)):
            rows.extend(f.result())
            bar.update(futures[f])
    except BaseException:
        client.cancel(list(futures))
        raise
    return rows


# -- the run manifest and the CSV ----------------------------------------------------------
def _check_run_file(out: Path, signature: str, settings: dict, targets, overwrite: bool):
    run_file = out / RUN_FILE
    if run_file.is_file() and not overwrite:
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("signature") != signature:
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
    run_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_file.with_name(f".run.json{PARTIAL}")
    tmp.write_text(json.dumps({"signature": signature, "settings": settings}, indent=2))
    os.replace(tmp, run_file)


def _cleanup_partials(out: Path):
    for p in out.rglob(f"*{PARTIAL}"):
        with contextlib.suppress(OSError):
            p.unlink()


def _rows_from_outputs(targets, out: Path):
    rows = []
    for t in targets:
        path = out / t.output
        if not path.is_file():
            continue
        info = (read_tiff_description(path) or {}).get("napari_sansa", {})
        scores = info.get("scores") or [{}]
        areas = info.get("areas") or [{}] * len(scores)
        for i, (s, a) in enumerate(zip(scores, areas, strict=False)):
            rows.append(
                _row(
                    t,
                    "ok",
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
    for r in sorted(rows, key=lambda r: (_natural_key(Path(r["target"])), str(r["frame"]))):
        w.writerow(r)
    final = out / CSV_NAME
    tmp = final.with_name(f".{CSV_NAME}{PARTIAL}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, final)
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
) -> BatchReport:
    """Label every target image (files, folders, TIFF stacks) into ``out``.

    ``references``: a list of :class:`~napari_sansa.Reference`. ``model``: a registry
    name, a :class:`ModelSource`, or (local runs only) a loaded model. ``client``: a
    ``dask.distributed.Client`` to spread the work over a cluster. Outputs mirror the
    inputs' folders as TIFF label images (stacks as label stacks); ``scores.csv``
    lists every target with its per-class scores and areas, or why it failed.
    """
    from .core.fusion import check_threshold
    from .core.model import MODES, SansaModel
    from .core.preprocess import check_input_size

    t0 = time.perf_counter()
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    threshold = check_threshold(threshold)
    input_size = check_input_size(input_size)
    if isinstance(references, Reference):
        references = [references]
    references = list(references or [])
    if not references:
        raise InvalidInputError(
            "no references: give --reference IMAGE LABELS (or a --prompts JSON file)"
        )
    out = Path(out).expanduser().resolve()
    items = discover_targets(targets, out)
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
    signature = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    _check_run_file(out, signature, settings, items, overwrite)
    _cleanup_partials(out)
    run = RunSettings(
        mode,
        threshold,
        input_size,
        tuple(intensity_range) if intensity_range is not None else None,
        probabilities,
        batch_size,
        signature,
    )
    done_before = set() if overwrite else {t.output for t in items if (out / t.output).is_file()}
    todo = [t for t in items if t.output not in done_before]
    report = BatchReport(out, skipped=len(done_before))
    report.frames = sum(t.frames for t in todo)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=sum(t.frames for t in items),
        initial=sum(t.frames for t in items if t.output in done_before),
        unit="img",
        desc="napari-sansa",
        disable=not progress,
        dynamic_ncols=True,
    )
    rows: list = []
    try:
        if client is None:
            if loaded is None:
                loaded = _cached_model(source)
            memory = loaded.prepare_references(
                references,
                input_size=input_size,
                intensity_range=intensity_range,
                threshold=threshold,
            )
            rows = process_targets(
                loaded,
                memory,
                todo,
                out,
                run,
                strict,
                on_frame=lambda t, n: bar.update(n),
                skip_existing=not overwrite,
            )
        else:
            rows = _run_dask(
                client, source, references, todo, out, run, strict, chunk_size, bar, not overwrite
            )
    finally:
        bar.close()
        failed = [r for r in rows if r["status"] == "failed"]
        report.failed = [(r["target"], r["message"]) for r in failed]
        report.done = len({r["target"] for r in rows if r["status"] == "ok"})
        report.csv = _write_csv(out, _rows_from_outputs(items, out) + failed)
        report.seconds = time.perf_counter() - t0
    return report


def report_dict(report: BatchReport) -> dict:
    d = asdict(report)
    d["out"] = str(report.out)
    d["csv"] = str(report.csv) if report.csv else None
    return d
