"""Reading and preparing inputs ahead of the model, on background threads."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["prefetch"]

_DONE = object()


def prefetch(iterable, fn, depth: int = 2, workers: int = 1):
    """Yield ``fn(item)`` for each item of ``iterable``, in order, computed ahead.

    At most ``depth`` results wait ahead of the consumer. ``iterable`` is consumed by
    one feeder thread, ``fn`` runs on ``workers`` threads (numpy and torch release
    the GIL for the heavy parts). An exception from either is raised to the consumer
    at its place in the sequence. Closing the generator stops the feeding.
    """
    depth = max(1, int(depth))
    results: queue.Queue = queue.Queue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="napari-sansa-prep")

    def feed():
        try:
            items = iter(iterable)
            while True:
                while not slots.acquire(timeout=0.1):  # wait for room before reading more
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(items)
                except StopIteration:
                    break
                results.put(pool.submit(fn, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            results.put(exc)
            return
        results.put(_DONE)

    feeder = threading.Thread(target=feed, name="napari-sansa-feed", daemon=True)
    feeder.start()
    try:
        while True:
            got = results.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            try:
                value = got.result()
            finally:
                slots.release()
            yield value
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
