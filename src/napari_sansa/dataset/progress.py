"""A dataset run's progress, frame by frame, and stopping it: ``segment_dataset``'s
``on_progress``/``cancel`` and :func:`segment_dataset_iter`, one generator step per
finished frame (for a GUI, a notebook or a service)."""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetProgress", "segment_dataset_iter"]


@dataclass(frozen=True)
class DatasetProgress:
    """One step of a dataset run: ``frames`` frames of ``target`` are finished.

    ``done`` and ``total`` count the run's frames (those finished by earlier runs are
    done from the start; a TIFF found to be a stack when it is opened adds its frames to
    ``total``). ``rows``: the entries of ``scores.csv`` finished since the previous step
    (dicts with ``target``, ``frame``, ``output`` (relative to ``out``), ``status`` (ok,
    blank, failed, reference), ``message``, ``score_<class>``, ``area_<class>``): an
    ``ok`` row's output is complete on disk. A stack's rows come once its whole label
    stack is written, with the step of its last frame or the one after it.
    """

    target: str
    frames: int
    done: int
    total: int
    out: Path
    rows: tuple = ()

    def outputs(self) -> list[tuple[str, Path]]:
        """``(input, output file)`` of the outputs completed in this step (a stack once)."""
        seen: dict[str, Path] = {}
        for r in self.rows:
            if r["status"] in ("ok", "blank") and r["output"]:
                seen.setdefault(r["target"], self.out / r["output"])
        return list(seen.items())


class RunCancelled(Exception):  # noqa: N818 - not an error: the run was asked to stop
    """Raised inside a run when its cancel token is set; ``segment_dataset`` ends then."""


class _Progress:
    """The run's frame count: drives the tqdm ``bar`` and ``on_progress``, and stops the
    run (:class:`RunCancelled`) once ``cancelled()`` is True. Called from the run's
    thread and its writer thread; it also stands in for the bar of a Dask run."""

    def __init__(self, bar, rows: list, out: Path, on_progress, cancelled, done: int, total: int):
        self.bar, self.rows, self.out = bar, rows, out
        self.on_progress, self.cancelled = on_progress, cancelled
        self.done, self._total, self._sent = done, total, 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:  # a TIFF that turned out to be a stack
        self._total = value
        self.bar.total = value
        self.bar.refresh()

    def frame_done(self, target, n: int) -> None:
        """``process_targets``' ``on_frame``."""
        self.update(n, target.source)

    def update(self, n: int, target: str = "") -> None:
        with self._lock:
            self.done += n
            if n:
                self.bar.update(n)
            self._send(target, n)
        self.check()

    def check(self) -> None:
        if self.cancelled():
            raise RunCancelled

    def _send(self, target: str, n: int) -> None:
        if self.on_progress is None:
            return
        new = tuple(self.rows[self._sent :])
        if not n and not new:
            return
        self._sent += len(new)
        self.on_progress(DatasetProgress(target, n, self.done, self._total, self.out, new))

    def flush(self) -> None:
        """Send the rows not sent yet (failures found last, a stack's rows)."""
        with self._lock:
            self._send("", 0)


def _unfinished(work, rows) -> bool:
    """Whether a target of ``work`` has no row: the model stopped early (``cancel``)."""
    seen = {r["target"] for r in rows}
    return any(t.source not in seen for t in work)


_END = object()


def segment_dataset_iter(targets, references, out, **options) -> Iterator[DatasetProgress]:
    """:func:`~napari_sansa.dataset.segment_dataset` as a generator: one
    :class:`DatasetProgress` per finished frame, and the :class:`BatchReport` as its
    return value (``StopIteration.value``; napari's workers emit it as ``returned``).

    ``options``: ``segment_dataset``'s keywords (``progress`` defaults to False here: no
    terminal bar). The run goes on a background thread from the first ``next()``, where
    its settings are checked (their errors are raised there). ``close()`` (or leaving a
    ``for`` loop) stops it after the frame in progress and waits for it: finished outputs
    stay, no half-written file is left, ``scores.csv`` lists what was done, the folder's
    lock is released and the same call later resumes. A ``cancel`` given in ``options``
    stops it too (the report's ``cancelled`` says so).
    """
    from napari_sansa.dataset.runner import segment_dataset

    if "on_progress" in options:
        raise TypeError("segment_dataset_iter() yields the progress: on_progress is not taken")
    inspect.signature(segment_dataset).bind(targets, references, out, **options)  # TypeError
    return _iterate(segment_dataset, targets, references, out, options)


def _iterate(run, targets, references, out, options):
    from napari_sansa.core.options import check_cancel

    options.setdefault("progress", False)
    given = check_cancel(options.pop("cancel", None))
    stop = threading.Event()
    steps: queue.Queue = queue.Queue()

    def work():
        try:
            report = run(
                targets,
                references,
                out,
                on_progress=steps.put,
                cancel=lambda: stop.is_set() or given(),
                **options,
            )
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            steps.put((_END, exc, None))
            return
        steps.put((_END, None, report))

    thread = threading.Thread(target=work, name="napari-sansa-dataset", daemon=True)
    thread.start()
    try:
        while True:
            item = steps.get()
            if isinstance(item, DatasetProgress):
                yield item
                continue
            _, error, report = item
            if error is not None:
                raise error
            return report
    finally:
        stop.set()
        thread.join()
