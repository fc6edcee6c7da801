"""A dataset run's progress, frame by frame, and stopping it: ``segment_dataset``'s
``on_progress``/``cancel`` and :func:`segment_dataset_iter`, one generator step per
finished frame (for a GUI, a notebook or a service)."""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Iterator

from napari_sansa.core.options import check_cancel
from napari_sansa.dataset import runner
from napari_sansa.dataset.run_progress import DatasetProgress, RunCancelled
from napari_sansa.dataset.settings import DatasetOptions

__all__ = ["DatasetProgress", "RunCancelled", "segment_dataset_iter"]


_END = object()


def segment_dataset_iter(
    targets, references, out, options=None, **keywords
) -> Iterator[DatasetProgress]:
    """:func:`~napari_sansa.dataset.segment_dataset` as a generator: one
    :class:`DatasetProgress` per finished frame, and the :class:`BatchReport` as its
    return value (``StopIteration.value``; napari's workers emit it as ``returned``).

    ``options`` and ``keywords``: as ``segment_dataset`` takes them (``progress`` defaults
    to False here: no terminal bar). The run goes on a background thread from the first
    ``next()``, where its settings are checked (their errors are raised there).
    ``close()`` (or leaving a ``for`` loop) stops it after the frame in progress and waits
    for it: finished outputs stay, no half-written file is left, ``scores.csv`` lists what
    was done, the folder's lock is released and the same call later resumes. A ``cancel``
    given in ``keywords`` stops it too (the report's ``cancelled`` says so).
    """
    options = keywords if options is None else {"options": options, **keywords}
    if "on_progress" in options:
        raise TypeError("segment_dataset_iter() yields the progress: on_progress is not taken")
    run = runner.segment_dataset  # looked up at each call (tests wrap it)
    inspect.signature(run).bind(targets, references, out, **options)  # TypeError
    known = set(inspect.signature(runner.segment_dataset).parameters) | set(DatasetOptions.names())
    unknown = sorted(set(options) - known)
    if unknown:  # as a call of segment_dataset would say, but at once
        raise TypeError(f"segment_dataset() got an unexpected keyword argument {unknown[0]!r}")
    return _iterate(run, targets, references, out, options)


def _iterate(run, targets, references, out, options):
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
