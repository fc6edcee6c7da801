"""Spreading a run over a Dask cluster: each worker loads the model once, the references
are decoded once (on a worker) and shared, and targets go out in chunks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import os
import time

from napari_sansa.core.errors import InvalidInputError, SansaError
from napari_sansa.core.models.source import ModelSource
from napari_sansa.core.threads import thread_policy
from napari_sansa.dataset import models
from napari_sansa.dataset.settings import RunSettings
from napari_sansa.dataset.writing import process_targets

log = logging.getLogger(__name__)

#: seconds a Dask run waits for a worker when the cluster has none left (``worker_wait``,
#: ``--worker-wait``) before it stops
WORKER_WAIT = 60.0
#: seconds between two looks at the cluster's workers while no result comes
WORKER_POLL = 1.0
#: the address forms of a scheduler given by ``--scheduler``
ADDRESS_FORM = "tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786, as `dask scheduler` prints it)"


class WorkersLostError(SansaError, RuntimeError):
    """A Dask run stopped because its cluster had no worker left for ``worker_wait``
    seconds; the outputs finished before are kept (a rerun does the rest)."""

    exit_code = 1  # the command line's: the run stopped, the input was fine


class SchedulerLostError(WorkersLostError):
    """A Dask run stopped because the client lost its scheduler (it stopped, died or
    cannot be reached); the outputs finished before are kept (a rerun does the rest)."""


def _scheduler_lost(client, stopped) -> SchedulerLostError:
    address = getattr(getattr(client, "scheduler", None), "address", "?")
    return SchedulerLostError(
        f"the Dask scheduler at {address} went away (it stopped, died or cannot be reached): "
        f"{stopped()}; run the same command again (with a scheduler running) to finish"
    )


def _cancelled_errors() -> tuple:
    """The errors of futures cancelled under the client: its scheduler went away."""
    from distributed.client import ClosedClientError, FutureCancelledError, FuturesCancelledError

    return (FutureCancelledError, FuturesCancelledError, ClosedClientError)


def _gone(client, exc: BaseException) -> bool:
    """Whether ``exc`` says the client lost its scheduler (futures cancelled under it,
    or the client closed as its scheduler closed)."""
    closed = getattr(client, "status", "running") in ("closing", "closed")
    return isinstance(exc, _cancelled_errors()) or (closed and isinstance(exc, Exception))


def check_worker_wait(value) -> float:
    """``worker_wait`` as a finite number of seconds > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and value > 0
    if not ok:
        raise InvalidInputError(
            f"the wait for Dask workers (worker_wait, --worker-wait) must be a finite number of "
            f"seconds > 0, got {value!r}"
        )
    return float(value)


def check_scheduler_address(address: str) -> str:
    """``address`` if it has the form of a Dask scheduler's address (nothing is contacted)."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.comm.registry import get_backend
    except ImportError:
        raise InvalidInputError(
            "--scheduler needs dask.distributed: pip install 'napari-sansa[dask]'"
        ) from None

    text = str(address).strip()
    if not text:
        raise InvalidInputError(f"--scheduler was given an empty address: give {ADDRESS_FORM}")
    try:
        scheme, location = parse_address(text)
        get_backend(scheme)  # an unknown scheme
        parts = location.split("/")
        if scheme == "inproc" and (len(parts) != 3 or parts[1] != str(os.getpid())):
            raise ValueError(
                "inproc:// names a scheduler inside one Python process (inproc://HOST/PID/N), "
                "which other processes cannot reach; in Python, pass client= to segment_dataset"
            )
        if scheme in ("tcp", "tls", "ws", "wss"):
            _, port = parse_host_port(location)
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port} is not in 1-65535")
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"--scheduler {address!r} is not a Dask scheduler address ({exc}): give "
            f"{ADDRESS_FORM}, or HOST:PORT"
        ) from None
    if scheme == "tls" and _tls_context() is None:
        raise InvalidInputError(
            f"--scheduler {text} uses TLS, but Dask has no TLS settings: set "
            "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
            "distributed.comm.tls.client.key in Dask's configuration (a YAML file in "
            "~/.config/dask/, or the environment variables DASK_DISTRIBUTED__COMM__TLS__"
            "CA_FILE, ...__CLIENT__CERT and ...__CLIENT__KEY), as for the scheduler"
        )
    return text


def _tls_context():
    """The SSL context of Dask's client TLS settings (its configuration), or None."""
    from distributed.security import Security

    try:
        return Security().get_connection_args("client").get("ssl_context")
    except Exception:  # noqa: BLE001 - settings naming unreadable files: Client says so
        return True


def _worker_count(client) -> int:
    """The cluster's workers (0 when the scheduler cannot be asked)."""
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - a scheduler gone away: no worker can be reached
        return 0


def _finished(client, futures, worker_wait: float, stopped, seen: bool = False):
    """The futures as they finish (their order), while the cluster has workers: once it
    has had none for ``worker_wait`` seconds, :class:`WorkersLostError` (``stopped()``
    says what the run leaves undone). The clock starts only once a worker has been seen
    (``seen``: before this call): until the first worker connects (a batch job still in
    the queue), the run waits without limit."""
    from dask.distributed import wait

    pending = set(futures)
    poll = min(WORKER_POLL, worker_wait / 4)
    alone_since = None
    told = False
    while pending:
        try:
            done, pending = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):  # two classes on Python 3.10
            done = ()
        if done:
            seen = True
            alone_since = None
            yield from done
            continue
        if _worker_count(client):
            seen = True
            alone_since = None
        elif not seen:
            if not told:
                address = getattr(getattr(client, "scheduler", None), "address", "?")
                log.warning("waiting for a Dask worker to connect to the scheduler at %s", address)
                told = True
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since >= worker_wait:
            address = getattr(getattr(client, "scheduler", None), "address", "?")
            raise WorkersLostError(
                f"no Dask worker has been connected to the scheduler at {address} for "
                f"{worker_wait:g} s (they stopped or died): {stopped()}; start workers and run "
                "the same command again to do the rest (--worker-wait SECONDS, worker_wait= "
                "in Python, sets how long to wait for them)"
            )


def _prepare_task(source: ModelSource, refs, options):
    with thread_policy(source.threads):  # sized to this worker's threads
        model = models.cached_model(source)
        return model.prepare_references(refs, options)


def _chunk_task(source: ModelSource, memory, targets, out, run, strict, skip_existing):
    rows: list = []
    try:
        with thread_policy(source.threads):  # sized to this worker's threads
            return process_targets(
                models.cached_model(source),
                memory,
                targets,
                out,
                run,
                strict,
                None,
                skip_existing,
                rows,
            )
    except InvalidInputError as exc:  # strict: the client lists the failure in scores.csv
        exc.failed_rows = [r for r in rows if r["status"] == "failed"]
        raise


#: targets per Dask task at most, by default
CHUNK_SIZE = 16


def chunk_size_for(targets, size: int | None, worker_threads: int) -> int:
    """Targets per task: ``size`` when given; else up to :data:`CHUNK_SIZE`, fewer so that
    the images go out in at least as many tasks as the cluster has worker threads (12
    images on 2 one-thread workers: 2 tasks of 6, not one task that leaves a worker and
    its core idle)."""
    if size is not None:
        return int(size)
    images = sum(1 for t in targets if t.kind != "stack")
    if worker_threads < 1 or images < 1:
        return CHUNK_SIZE
    return max(1, min(CHUNK_SIZE, math.ceil(images / worker_threads)))


def _worker_threads(client) -> int:
    """The threads of the cluster's workers together (0 when the scheduler cannot say)."""
    try:
        return int(sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler gone away: the default size
        return 0


def _chunks(targets, run: RunSettings, size: int):
    if run.mode == "sequential":
        # order matters within each folder sequence: keep images together, stacks alone
        images = [t for t in targets if t.kind != "stack"]  # "tiff": opened on the worker
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


def prepare_dask(client, source, refs, run: RunSettings, worker_wait: float = WORKER_WAIT):
    """The references' memory, prepared on a worker; its errors (model, references) raised,
    and :class:`WorkersLostError` when the cluster has no worker for ``worker_wait`` s."""
    from napari_sansa.dataset.dask_plugins import stop_profilers

    nothing = lambda: "nothing was labelled"  # noqa: E731
    memory = None
    try:
        stop_profilers(client)  # Python 3.11: a worker's profiler can deadlock it
        memory = client.submit(_prepare_task, source, refs, run.segment, pure=False)
        for _ in _finished(client, [memory], worker_wait, nothing):
            pass
        if memory.status == "cancelled":
            raise _scheduler_lost(client, nothing)
    except WorkersLostError:
        with contextlib.suppress(Exception):  # the scheduler may be gone
            client.cancel([memory])
        raise
    except Exception as exc:
        # OSError: the scheduler could not be reached (comm closed, connect timed out)
        if _gone(client, exc) or isinstance(exc, OSError):
            raise _scheduler_lost(client, nothing) from None
        raise
    if memory.status == "error":
        memory.result()  # raises the worker's error
    return memory


def run_dask(
    client,
    source,
    memory,
    todo,
    out,
    run,
    strict,
    chunk_size,
    bar,
    skip_existing,
    rows,
    worker_wait: float = WORKER_WAIT,
):
    futures = {}
    chunk_size = chunk_size_for(todo, chunk_size, _worker_threads(client))
    for chunk in _chunks(todo, run, chunk_size):
        f = client.submit(
            _chunk_task, source, memory, chunk, str(out), run, strict, skip_existing, pure=False
        )
        futures[f] = sum(t.frames for t in chunk)
    pending = [len(futures)]

    def stopped() -> str:
        return (
            f"{pending[0]} of {len(futures)} chunk(s) of targets were not done; the outputs "
            "finished are kept and listed in scores.csv"
        )

    try:
        try:
            for f in _finished(client, list(futures), worker_wait, stopped, seen=True):
                done = f.result()
                pending[0] -= 1
                rows.extend(done)
                # a TIFF found to be a stack on the worker: one row per frame (bar in frames)
                if len(done) > futures[f]:
                    bar.total += len(done) - futures[f]
                bar.update(len(done))
        except Exception as exc:
            if _gone(client, exc):
                raise _scheduler_lost(client, stopped) from None
            raise
    except BaseException as exc:
        rows.extend(getattr(exc, "failed_rows", []))
        with contextlib.suppress(Exception):  # the scheduler may be gone
            client.cancel(list(futures))
        raise
    return rows
