"""The worker plugin a Dask run registers on Python 3.11: each worker's statistical
profiler off.

On Python 3.11 a thread that calls ``sys._current_frames()`` (Dask's worker profiler, every
10 ms) can deadlock with another thread: it holds the interpreter's thread-list lock while
a garbage collection it started waits for the GIL, which a thread waiting for that lock
holds (python/cpython#106883 and #116969, dask/distributed#8616; not fixed in 3.11, gone in
3.12 where allocation no longer runs the collector). A worker labelling with torch hangs
for good then: its tasks never finish and its heartbeats stop. The test suite met it.

Imported only when a run has a ``dask.distributed.Client`` (distributed is an extra).
"""

from __future__ import annotations

import logging
import sys

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)

#: whether this Python can deadlock a worker whose profiler samples its threads
PROFILER_DEADLOCKS = sys.version_info < (3, 12)
#: the periodic callbacks of a worker that sample and roll its profile
PROFILER_CALLBACKS = ("profile", "profile-cycle")


class StopProfiler(WorkerPlugin):
    """Stops the worker's statistical profiler (its dashboard's Profile page stays empty);
    everything else of the worker as it was. Registered once per cluster under
    :attr:`name`, also set up on workers that join later."""

    name = "napari-sansa-stop-profiler"
    idempotent = True

    def setup(self, worker) -> None:
        for key in PROFILER_CALLBACKS:
            callback = worker.periodic_callbacks.pop(key, None)
            if callback is not None:
                callback.stop()


def stop_profilers(client) -> bool:
    """On Python 3.11 (:data:`PROFILER_DEADLOCKS`), the cluster's worker profilers off (see
    the module's note); returns whether the plugin was registered."""
    if not PROFILER_DEADLOCKS:
        return False
    client.register_plugin(StopProfiler(), name=StopProfiler.name)
    log.info(
        "Python %d.%d: the Dask workers' statistical profiler is off for this cluster (it "
        "can deadlock a worker on Python 3.11; python/cpython#106883)",
        *sys.version_info[:2],
    )
    return True
