"""Streaming targets through the model and writing their outputs as they come.

Images are read by the model's prefetch threads and written by a writer thread, so the
model never waits for the disk; a TIFF stack is read one frame at a time and its label
stack written as the frames are computed. Used locally and on Dask workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import PARTIAL
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_image
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.io import read_image, write_tiff_atomic
from napari_sansa.dataset.records import (
    RunSettings,
    _describe,
    _remove_stale_probabilities,
    _row,
    _target_done,
    _write_failed,
)
from napari_sansa.dataset.stacks import _process_stack

log = logging.getLogger(__name__)


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
                for pred in model.segment_iter(
                    memory,
                    frames(),
                    mode=run.mode,
                    threshold=run.threshold,
                    batch_size=run.batch_size,
                ):
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


def _cleanup_partials(out: Path):
    for p in out.rglob(f"*{PARTIAL}"):
        with contextlib.suppress(OSError):
            p.unlink()
