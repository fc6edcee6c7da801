"""Streaming targets through the model and writing their outputs as they come.

Images are read by the model's prefetch threads and written by a writer thread, so the
model never waits for the disk; a TIFF stack is read one frame at a time and its label
stack written as the frames are computed. Used locally and on Dask workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import PARTIAL, TEMPORARY_NAME, is_temporary
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_image, image_hw
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.input_store import add_to_input_store
from napari_sansa.dataset.io import LEGACY_PARTIAL, read_target
from napari_sansa.dataset.outputs import Blocks, Layout, write_failed, write_output, writer_for
from napari_sansa.dataset.records import (
    OutputInTheWayError,
    StaleProbabilitiesError,
    as_recorded,
    check_output_paths,
    done_record,
    output_record,
    remove_stale_outputs,
    source_state,
)
from napari_sansa.dataset.rows import score_row
from napari_sansa.dataset.settings import RunSettings, predictions
from napari_sansa.dataset.stacks import process_stack

log = logging.getLogger(__name__)


def targets_to_compute(items, done: set, run: RunSettings) -> list:
    """The targets to compute. A sequence (sequential mode) is computed from its start up
    to its last unfinished image, so that each image sees the same earlier images as in
    an uninterrupted run; its finished outputs are not written again."""
    if run.mode != "sequential":
        return [t for t in items if t.output not in done]
    images = [t for t in items if t.kind in ("image", "tiff")]
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


def _process_images(model, memory, items, out, run, strict, rows, on_frame, keep=frozenset()):
    """Stream image targets through the model; unreadable ones are reported and skipped.

    Images are read by the model's prefetch threads; outputs are written by a writer
    thread. If the model itself refuses an image, that image is reported and the
    stream starts again after it. Targets whose output is in ``keep`` are computed
    (for the memory of a sequence) but their finished outputs are not written again.
    A TIFF that turns out to be a stack is not labelled here: the stacks found are
    returned (as targets of kind "stack"), to be labelled after the images.
    """
    failed: dict[str, dict] = {}  # by source: a read-ahead image may be read twice
    unreadable: list = []  # strict: the image whose reading stopped the run
    passed: set = set()  # finished images (in ``keep``) that cannot be read any more
    found: dict[str, Target] = {}  # TIFFs that are stacks, by source
    states: dict[str, dict] = {}  # the input's state when it was read, by source
    remaining = list(items)
    writer = _Writer()

    def write(t, pred):
        try:
            _write_image(t, pred, out, run, rows, states.get(t.source))
        except (StaleProbabilitiesError, OutputInTheWayError) as exc:
            rows.append(score_row(t, "failed", str(exc)))
        on_frame(t, 1)

    try:
        while remaining:
            todo, remaining = remaining, []
            fed: list = []  # targets handed to the model, in order

            def frames(todo=todo, fed=fed):
                for t in todo:
                    if t.source in found:
                        continue
                    state = source_state(t.source)
                    try:
                        lazy = run.segment.tiles is not None  # a large TIFF: read by tiles
                        kind, img = read_target(t.source, run.axes, run.channels, lazy)
                        if kind == "stack":
                            found[t.source] = replace(t, kind="stack", frames=img)
                            continue
                        if isinstance(img, np.ndarray):
                            check_image(img, f"image {t.source}")
                        else:  # read by tiles: checked tile by tile
                            _check_by_tiles(img, run, f"image {t.source}")
                    except InvalidInputError as exc:
                        if t.output in keep:  # finished before: its output stays as it is
                            if t.source not in passed:
                                passed.add(t.source)
                                on_frame(t, 1)
                            continue
                        if t.source not in failed:
                            failed[t.source] = score_row(t, "failed", str(exc))
                            on_frame(t, 1)
                        if strict:
                            unreadable.append(t)
                            raise
                        continue
                    states[t.source] = state
                    fed.append(t)
                    yield img

            done = 0
            try:
                for pred in predictions(model, memory, frames(), run):
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
                    failed[bad.source] = score_row(bad, "failed", str(exc))
                on_frame(bad, 1)
                if strict:
                    raise
                remaining = todo[todo.index(bad) + 1 :]
    finally:
        try:
            writer.finish()
        finally:  # also when a write stopped the run: the failures found are listed
            rows.extend(failed.values())
    return [found[t.source] for t in items if t.source in found]


def _check_by_tiles(img, run: RunSettings, what: str) -> None:
    """:func:`check_image`'s checks on an image read window by window, one tile at a
    time. An image whose conversion needs its range (integers other than uint8, floats,
    no intensity range) is left to the model's own pass over its tiles, which makes the
    same checks."""
    from napari_sansa.core.tiling import TiledImage

    hw = image_hw(img, what)
    rng = run.segment.intensity_range
    if rng is None and np.dtype(img.dtype) not in (np.uint8, np.bool_):
        return
    TiledImage(img, run.segment.tiles.grid(hw), rng, what)._min_max()


def _label_tiles(pred, areas: dict, n: int):
    """A tiled prediction's class map as the ``n`` x ``n`` tiles of an output written by
    blocks (``OutputWriter.block``; in order, edge tiles padded), made one band of the
    tile grid at a time: nothing of the image's size is held. ``areas`` counts each
    class's pixels."""
    return _block_tiles(pred, n, _labels_of(pred, areas))


def _blocks(pred, make) -> Blocks:
    """``make(block)`` of every block of a tiled prediction's logits (one per tile, its
    kept part), where it belongs: for a format that writes regions in any order."""
    from napari_sansa.core.tiling import iter_blocks

    return Blocks((rows, cols, make(block)) for (rows, cols), block in iter_blocks(pred))


def _probabilities_of(classes):
    from napari_sansa.core.fusion import sigmoid

    def probabilities(block):
        return np.stack([sigmoid(block[c]) for c in classes]).astype(np.float32, copy=False)

    return probabilities


def _labels_of(pred, areas: dict):
    """The class map of a block, counting each class's pixels into ``areas``."""

    def labels(block):
        lab = pred.fused(block)
        counts = np.bincount(lab.ravel())
        for c in areas:
            areas[c] += int(counts[c]) if c < len(counts) else 0
        return lab

    return labels


def _block_tiles(pred, n: int, make):
    """``make(block)`` (a ``(..., rows, cols)`` array of one block of the prediction's
    logits) over the image, as ``n`` x ``n`` tiles in raster order (edge tiles padded
    with 0), made one band of the tile grid at a time."""
    from napari_sansa.core.tiling import iter_blocks

    h, w = pred.shape
    band, top, buf = None, 0, []
    for (rows, cols), block in iter_blocks(pred):
        part = make(block)
        if band is None or rows.start != top:
            if band is not None:
                buf.append(band)
            shape = (*part.shape[:-2], rows.stop - rows.start, w)
            band, top = np.zeros(shape, part.dtype), rows.start
        band[..., cols] = part
        while sum(b.shape[-2] for b in buf) >= n:
            yield from _band_tiles(_take_rows(buf, n), n)
    buf.append(band)
    while buf and sum(b.shape[-2] for b in buf):
        yield from _band_tiles(_take_rows(buf, min(n, sum(b.shape[-2] for b in buf))), n)


def _take_rows(buf: list, n: int) -> np.ndarray:
    """The first ``n`` rows (the second last axis) of the bands ``buf`` (taken out of it)."""
    parts, need = [], n
    while need:
        b = buf[0]
        parts.append(b[..., :need, :])
        if b.shape[-2] <= need:
            buf.pop(0)
        else:
            buf[0] = b[..., need:, :]
        need -= parts[-1].shape[-2]
    return np.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]


def _band_tiles(rows: np.ndarray, n: int):
    """The ``n`` x ``n`` tiles of up to ``n`` rows of a band, padded with 0."""
    for c0 in range(0, rows.shape[-1], n):
        tile = np.zeros((*rows.shape[:-2], n, n), rows.dtype)
        part = rows[..., c0 : c0 + n]
        tile[..., : part.shape[-2], : part.shape[-1]] = part
        yield tile


def _write_image(t: Target, pred, out: Path, run: RunSettings, rows, state=None):
    from napari_sansa.core.tiling import StitchedLogits

    classes = list(pred.classes)
    scores = {c: pred.scores[c] for c in classes}
    final = out / t.output
    writer = writer_for(final)
    # a format that writes regions in any order (OME-Zarr) streams the probabilities too
    regions = writer.takes_blocks
    by_blocks = (
        isinstance(pred.logits, StitchedLogits)
        and (regions or not run.probabilities)
        and run.instances is None
    )
    if by_blocks:  # a tiled prediction: never held at the image's size
        areas = dict.fromkeys(classes, 0)
        labels = None
    else:
        labels = pred.labels
        areas = {c: int((labels == c).sum()) for c in classes}

    def record(role="labels", objects=None):
        return output_record(
            t, run, classes, [scores], [areas], state=state, role=role, objects=objects
        )

    check_output_paths(t, out, run)  # before anything of the target is removed
    remove_stale_outputs(t, out, run)
    try:
        if run.probabilities and by_blocks:  # by regions, in a format that takes them
            blocks = _blocks(pred, _probabilities_of(classes))
            layout = Layout((len(classes), *pred.shape), np.float32)
            write_output(out / t.prob_output, layout, blocks, record("probabilities"))
        elif run.probabilities:
            probs = np.stack([pred.probabilities[c] for c in classes])
            layout = Layout(probs.shape, np.float32)
            write_output(out / t.prob_output, layout, probs, record("probabilities"))
        if run.instances is not None:  # before the labels, the marker of a finished target
            obj = pred.objects
            layout = Layout(obj.shape, obj.dtype)
            write_output(out / t.objects_output, layout, obj, record("objects", pred.object_table))
        if by_blocks:
            from napari_sansa.core.fusion import label_dtype

            n = writer.block
            dtype = label_dtype(classes[-1])
            if regions:  # each tile's kept part where it belongs: not even a band is held
                tiles, layout = _blocks(pred, _labels_of(pred, areas)), Layout(pred.shape, dtype)
            else:
                tiles = _label_tiles(pred, areas, n)  # counts the areas: recorded once written
                layout = Layout(pred.shape, dtype, tile=(n, n))
            write_output(final, layout, tiles, describe=record)
        else:
            write_output(final, Layout(labels.shape, labels.dtype), labels, record())
        if run.options.into_input_store:
            add_to_input_store(t, final, record())
    except OSError as exc:
        write_failed(exc, final)
    rows.append(score_row(t, "ok", scores=scores, areas=areas))


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
    on_stack=None,
):
    """Label ``targets`` into ``out``; return CSV rows. Used locally and on Dask workers.

    Targets whose outputs are already there are not written again, so a task that is
    run again (a resumed run, a worker that died) redoes nothing that was finished. In
    sequential mode the images form one sequence, computed from its start (see
    :func:`targets_to_compute`). ``rows``: a list to add the rows to (it keeps them if this raises).
    ``on_frame(target, n)``: ``n`` frames of ``target`` are done; ``on_stack(target)``: a
    TIFF was found to be a stack of ``target.frames`` frames when it was opened.
    """
    out = Path(out)
    on_frame = on_frame or (lambda t, n: None)
    on_stack = on_stack or (lambda t: None)
    rows = [] if rows is None else rows
    records = {}
    for t in targets if skip_existing else ():
        record = done_record(t, out, run)
        if record is not None:
            records[t.output] = record
    targets = [as_recorded(t, records.get(t.output)) for t in targets]
    todo = targets_to_compute(targets, set(records), run)
    keep = frozenset(t.output for t in todo if t.output in records)
    i = 0
    while i < len(todo):
        if todo[i].kind == "stack":
            process_stack(model, memory, todo[i], out, run, strict, rows, on_frame)
            on_frame(todo[i], 0)  # its rows are in: progress reports them now
            i += 1
            continue
        j = i
        while j < len(todo) and todo[j].kind != "stack":
            j += 1
        stacks = _process_images(model, memory, todo[i:j], out, run, strict, rows, on_frame, keep)
        for t in stacks:  # TIFFs found to be stacks when they were opened
            on_stack(t)
            process_stack(model, memory, t, out, run, strict, rows, on_frame)
            on_frame(t, 0)
        i = j
    return rows


#: temporaries of napari-sansa 0.1 (its mark, :data:`~napari_sansa.dataset.io.LEGACY_PARTIAL`,
#: at the end): an output's anywhere, ``scores.csv``'s in ``--out`` itself, ``run.json``'s in
#: ``.napari-sansa/``
_TEMPORARY_01 = re.compile(rf"\..+\.[0-9a-f]{{32}}{re.escape(LEGACY_PARTIAL)}\Z", re.DOTALL)
_ROOT_01 = f".scores.csv{LEGACY_PARTIAL}"
_OWN_01 = f".run.json{LEGACY_PARTIAL}"
#: temporaries of the versions between 0.1 and the mark: no mark of the package, so only
#: removed in its own folder ``.napari-sansa/`` (a user's file elsewhere may look so)
_UNMARKED = re.compile(rf"\..+\.[0-9a-f]{{32}}{re.escape(PARTIAL)}\Z", re.DOTALL)


def _is_leftover(name: str, where: str) -> bool:
    """Whether ``name`` is a temporary napari-sansa wrote, in ``where``: "out" (the folder
    itself), "own" (its ``.napari-sansa``) or "below" (any other subfolder)."""
    if is_temporary(name) or _TEMPORARY_01.match(name):
        return True
    if where == "out":
        return name == _ROOT_01
    return where == "own" and (name == _OWN_01 or _UNMARKED.match(name) is not None)


def _remove_file(path: Path) -> None:
    """Remove ``path`` if it is a regular file (a link is left alone, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISREG(path.lstat().st_mode):
            path.unlink()


def _remove_partial_stores(here: Path, dirs: list) -> None:
    """Remove the OME-Zarr stores napari-sansa left half-written (or half-removed) in
    ``here``: folders named as its temporaries (:func:`is_temporary`) of a ``.zarr``
    name; ``dirs`` (of :func:`os.walk`) keeps only the folders to search further (not
    the insides of stores)."""
    import shutil

    keep = []
    for name in dirs:
        path = here / name
        m = TEMPORARY_NAME.match(name)
        if m and m.group("final").endswith(".zarr"):
            if not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        elif not name.endswith(".zarr"):
            keep.append(name)
    dirs[:] = keep


def cleanup_partials(out: Path) -> None:
    """Remove leftovers of interrupted writes in ``out``. Called while the run holds the
    folder's lock, so no other run writes there; a subfolder that holds another output
    folder (its own ``.napari-sansa``) is left alone, and so is every other file: only
    regular files whose whole name is one napari-sansa gives its temporaries (with the
    package's mark; see :func:`_is_leftover` for those of earlier versions)."""
    scratch = out / ".napari-sansa"
    own = scratch.is_dir() and not scratch.is_symlink()
    for folder in scratch.iterdir() if own else ():
        if folder.is_symlink() or not folder.is_dir():
            continue
        if re.fullmatch(r"[0-9a-f]{40}", folder.name):  # a stack's memory-mapped scratch
            for f in folder.glob("*.npy"):  # (see stacks.py)
                _remove_file(f)
            features = folder / "features"  # --follow's feature cache of a killed run
            if features.is_dir() and not features.is_symlink():
                shutil.rmtree(features, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
    for folder, dirs, files in os.walk(out):
        here = Path(folder)
        if here != out and (here / ".napari-sansa").is_dir():
            dirs[:] = []
            continue
        where = "out" if here == out else "own" if here == scratch else "below"
        _remove_partial_stores(here, dirs)
        for name in files:
            if _is_leftover(name, where):
                _remove_file(here / name)
