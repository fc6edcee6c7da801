"""What a dataset run reports as it goes: :class:`DatasetProgress` (one step),
:class:`RunCancelled` (the run was asked to stop) and :class:`RunProgress`, the run's
frame count that sends them (what ``segment_dataset`` uses; :mod:`.progress` adds
``segment_dataset_iter`` on top)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetProgress", "RunCancelled", "RunProgress", "unfinished"]


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


class RunProgress:
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


def unfinished(work, rows) -> bool:
    """Whether a target of ``work`` has no row: the model stopped early (``cancel``)."""
    seen = {r["target"] for r in rows}
    return any(t.source not in seen for t in work)
