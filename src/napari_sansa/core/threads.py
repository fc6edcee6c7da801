"""One thread policy for every run: the API, the command line, the widget and Dask workers.

A run keeps several kinds of threads busy at once: PyTorch's intra-op (OpenMP) threads,
the threads that read and convert the next images (:func:`~napari_sansa.core._threads.
prefetch`), the thread that writes outputs (dataset runs), and the BLAS/OpenMP pools of
NumPy and scikit-image used on those threads. Each library sizes its pool to every core
of the machine on its own, so together they ask for several times as many threads as
there are cores; OpenMP threads then spin waiting for one another, and under a competing
load a 12-image run took 4-5x longer than with one thread (issue 21).

:func:`available_cores` finds the cores this process may keep busy now: its CPU affinity,
the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
inside a Dask worker the worker's ``nthreads`` (shared by the tasks it runs at once; the
``OMP_NUM_THREADS=1`` that Dask's nanny sets in its workers is not taken as a cap), and
the cores that other processes keep busy (measured from ``/proc/stat``). :func:`plan_threads`
sizes the pools from that budget so that there are never more busy threads than cores;
:func:`thread_policy` applies a plan for the duration of a run (``torch.set_num_threads``
and ``threadpoolctl`` limits) and puts back what was there before. ``threads=N`` (the
model setting, ``--threads``, the widget's advanced settings) overrides the measured
budget. Qt-free; torch and threadpoolctl are imported when a plan is applied.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass

from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "Cores",
    "ThreadPlan",
    "available_cores",
    "check_threads",
    "current_plan",
    "plan_threads",
    "thread_policy",
    "with_thread_policy",
]

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"  # replaced by tests
PROC_STAT = "/proc/stat"  # replaced by tests
#: how long the load of other processes is measured when no recent measurement exists
LOAD_SAMPLE_S = 0.1


def check_threads(value, what: str = "threads") -> int | None:
    """``value`` as a number of threads (a whole number >= 1) or None (automatic).

    Refuses 0, negative numbers, fractions, booleans and text that is not a whole
    number, saying what to give instead."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "auto"):
            return None
        try:
            value = int(text)
        except ValueError:
            raise InvalidInputError(
                f"{what} must be a whole number of threads >= 1 or 'auto', got {text!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a whole number of threads >= 1, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidInputError(f"{what} must be a whole number of threads >= 1, got {value!r}")
        value = int(value)
    if value < 1:
        raise InvalidInputError(
            f"{what} must be >= 1, got {value}: give the number of threads to use, or leave it "
            "out to use the cores this process may use"
        )
    return int(value)


# -- what the process may use ---------------------------------------------------------------
def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _affinity_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_quota(root: str | None = None) -> float | None:
    """The cgroup CPU quota in cores (e.g. 1.5), or None when there is none.

    cgroup v2: ``cpu.max`` (``"max 100000"``: none; ``"150000 100000"``: 1.5 cores);
    cgroup v1: ``cpu/cpu.cfs_quota_us`` over ``cpu/cpu.cfs_period_us`` (-1: none)."""
    root = CGROUP_ROOT if root is None else root
    v2 = _read(os.path.join(root, "cpu.max"))
    if v2 is not None:
        parts = v2.split()
        if len(parts) >= 1 and parts[0] != "max":
            try:
                quota = int(parts[0])
                period = int(parts[1]) if len(parts) > 1 else 100000
            except ValueError:
                return None
            if quota > 0 and period > 0:
                return quota / period
        return None
    for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        q = _read(os.path.join(root, d, "cpu.cfs_quota_us"))
        p = _read(os.path.join(root, d, "cpu.cfs_period_us"))
        if q is None or p is None:
            continue
        try:
            quota, period = int(q), int(p)
        except ValueError:
            return None
        if quota > 0 and period > 0:
            return quota / period
        return None
    return None


def dask_worker_threads() -> int | None:
    """Inside a Dask worker's task: the threads this task may use, the worker's
    ``nthreads`` shared by the tasks it runs at once; None outside a worker.

    dask is not imported here when the process has not imported it."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except Exception:  # noqa: BLE001 - ValueError: not in a worker; anything else: same
        return None
    nthreads = getattr(worker, "nthreads", None) or getattr(
        getattr(worker, "state", None), "nthreads", None
    )
    if not nthreads:
        return None
    state = getattr(worker, "state", None)
    busy = getattr(state, "executing_count", None)
    try:
        busy = max(1, int(busy))
    except (TypeError, ValueError):
        busy = 1
    return max(1, int(nthreads) // min(int(nthreads), busy))


# the load of other processes: /proc/stat's busy jiffies on our CPUs minus our own CPU time
_last_sample: tuple[float, dict[int, tuple[int, int]], float] | None = None
_last_value = 0.0
_sample_lock = threading.Lock()


def _cpu_times(path: str | None = None) -> dict[int, tuple[int, int]] | None:
    """``{cpu: (busy jiffies, total jiffies)}`` from /proc/stat, or None."""
    text = _read(PROC_STAT if path is None else path)
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
            values = [int(v) for v in fields[:8]]
        except ValueError:
            continue
        if len(values) < 5:
            continue
        idle = values[3] + values[4]  # idle + iowait
        out[cpu] = (sum(values) - idle, sum(values))
    return out or None


def _snapshot():
    return time.monotonic(), _cpu_times(), time.process_time()


def others_busy(wait: float | None = None) -> float:
    """How many of this process's CPUs other processes keep busy now (0.0 when it cannot
    be measured): the busy time of those CPUs minus this process's own CPU time, since
    the last measurement when it is 0.1 s to 30 s old, else over ``wait`` seconds (0.1);
    a measurement less than 0.1 s old is given again (fine-tuning steps, short runs)."""
    global _last_sample, _last_value
    wait = LOAD_SAMPLE_S if wait is None else wait
    with _sample_lock:
        previous, now = _last_sample, _snapshot()
        if now[1] is None:
            return 0.0
        if previous is not None and now[0] - previous[0] < 0.1:
            return _last_value
        if previous is None or now[0] - previous[0] > 30.0:
            if wait <= 0:
                _last_sample = now
                return 0.0
            time.sleep(wait)
            previous, now = now, _snapshot()
            if now[1] is None:
                return 0.0
        _last_sample = now
        _last_value = _busy_between(previous, now, _affinity_cpus())
        return _last_value


def _busy_between(previous, now, cpus) -> float:
    (t0, a, own0), (t1, b, own1) = previous, now
    keep = [c for c in b if c in a and (cpus is None or c in cpus)]
    busy = sum(b[c][0] - a[c][0] for c in keep)
    total = sum(b[c][1] - a[c][1] for c in keep)
    if total <= 0:
        return 0.0
    elapsed = t1 - t0
    busy_cores = busy / total * len(keep)  # the CPUs kept were busy this many at a time
    own = (own1 - own0) / elapsed if elapsed > 0 else 0.0
    return max(0.0, busy_cores - own)


@dataclass(frozen=True)
class Cores:
    """The cores a run may keep busy (``count``) and where the number comes from."""

    count: int
    affinity: int
    quota: float | None = None
    worker: int | None = None
    others: float = 0.0
    env: int | None = None

    def describe(self) -> str:
        parts = [f"{self.affinity} in the affinity mask"]
        if self.quota is not None:
            parts.append(f"cgroup quota {self.quota:g}")
        if self.worker is not None:
            parts.append(f"Dask worker threads {self.worker}")
        if self.env is not None:
            parts.append(f"OMP_NUM_THREADS={self.env}")
        if self.others >= 0.5:
            parts.append(f"{self.others:.1f} kept busy by other processes")
        return f"{self.count} core(s) ({', '.join(parts)})"


def available_cores(measure_load: bool = True) -> Cores:
    """The cores this process may keep busy now: the affinity mask, capped by the cgroup
    quota (rounded up: 1.5 cores keep 2 threads busy part of the time) and, in a Dask
    worker, by its share of the worker's threads, and by ``OMP_NUM_THREADS`` when the
    environment sets it (the person's own cap); less the cores other processes keep
    busy (``measure_load``), at least one."""
    affinity = _affinity()
    quota = cgroup_quota()
    worker = dask_worker_threads()
    env = _env_threads()
    if worker is not None and env is not None and _set_by_dask_nanny(env):
        env = None  # Dask's own setting for every worker process, not the person's cap
    count = affinity if env is None else min(affinity, env)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 1e-9)))
    if worker is not None:
        count = min(count, worker)
    others = others_busy() if measure_load else 0.0
    free = affinity - others  # other processes compete for the CPUs, not for our quota
    count = max(1, min(count, int(free + 0.5)))
    return Cores(count, affinity, quota, worker, others, env)


def _set_by_dask_nanny(value: int) -> bool:
    """Whether ``OMP_NUM_THREADS=value`` is what Dask's nanny sets in every worker process
    it starts (``distributed.nanny.pre-spawn-environ``: 1 by default, so that NumPy's pools
    do not compete with the worker's threads; the worker's ``nthreads`` already counts
    here). Such a worker with 4 threads would otherwise run torch on one."""
    try:
        import dask.config
    except ImportError:
        return False
    for key in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
        try:
            environ = dask.config.get(key, None) or {}
        except Exception:  # noqa: BLE001 - a config of another form: not Dask's setting
            continue
        given = environ.get("OMP_NUM_THREADS") if isinstance(environ, dict) else None
        if given is not None and str(given).strip() == str(value):
            return True
    return False


def _env_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


# -- the plan --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each pool of a run gets.

    ``cores``: the budget (the cores measured, or ``threads`` when given);
    ``torch``: PyTorch's intra-op threads; ``blas``: the BLAS/OpenMP pools of NumPy,
    SciPy and scikit-image (they run on the helper threads, next to torch's);
    ``prefetch``: threads that read and convert images ahead of the model on a CPU
    (on a GPU, torch's threads wait for the device: up to 4, see :meth:`prefetch_workers`);
    ``writers``: threads that write outputs; ``requested``: the ``threads`` setting.
    """

    cores: int
    torch: int
    blas: int = 1
    prefetch: int = 1
    writers: int = 1
    requested: int | None = None
    found: Cores | None = None

    def prefetch_workers(self, device_type: str) -> int:
        if device_type == "cpu":
            return self.prefetch
        return max(1, min(4, self.cores))

    def describe(self) -> str:
        source = (
            f"threads={self.requested}"
            if self.requested is not None
            else (self.found.describe() if self.found is not None else f"{self.cores} core(s)")
        )
        return (
            f"{self.torch} torch thread(s), {self.blas} BLAS/OpenMP thread(s) for NumPy, "
            f"{self.prefetch} reading and {self.writers} writing thread(s), from {source}"
        )


def plan_threads(threads: int | None = None, *, reserve: int = 0, cores: Cores | None = None):
    """The :class:`ThreadPlan` for a run.

    ``threads``: the setting (None: the cores found by :func:`available_cores`);
    ``reserve``: cores left to something else (the widget leaves one to napari's event
    loop). Torch gets the budget up to 3 cores (the helper threads mostly wait for the
    disk and a core of their own costs more than they use); from 4 cores on, one core is
    left to the reading and writing threads. NumPy's pools get one thread: they run
    next to torch's threads, and more would only take cores from them. More threads than
    cores are allowed when asked for, with a warning (:func:`thread_policy`)."""
    threads = check_threads(threads)
    if threads is not None:
        budget = threads
    else:
        cores = available_cores() if cores is None else cores
        budget = max(1, cores.count - max(0, int(reserve)))
    torch_threads = budget if budget < 4 else budget - 1
    return ThreadPlan(budget, torch_threads, requested=threads, found=cores)


# -- applying it -----------------------------------------------------------------------------
_active = threading.local()
_warned: set = set()


def current_plan() -> ThreadPlan:
    """The plan of the run under way on this thread, or the automatic plan (measured)."""
    plan = getattr(_active, "plan", None)
    return plan if plan is not None else plan_threads()


def _threadpool_limits(plan: ThreadPlan):
    """threadpoolctl's limits for NumPy's and scikit-image's pools (BLAS: ``plan.blas``;
    OpenMP, torch's own libgomp included: ``plan.torch``), or None without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if "threadpoolctl" not in _warned:
            _warned.add("threadpoolctl")
            log.warning("threadpoolctl is not installed: NumPy's thread pools are not sized")
        return None
    return threadpool_limits(limits={"blas": plan.blas, "openmp": plan.torch})


@contextlib.contextmanager
def thread_policy(threads: int | None = None, *, reserve: int = 0):
    """Apply the thread plan for the duration of a run; what was there before is put back.

    Sets PyTorch's intra-op threads (``torch.set_num_threads``) and, through
    ``threadpoolctl``, the BLAS/OpenMP pools of NumPy and scikit-image. Inside another
    run's policy on the same thread (a model run inside a dataset run, the widget's
    worker), the outer plan stays: the outermost setting wins. Yields the plan in force.
    ``threads`` larger than the cores this process may use is allowed (another run
    may end soon, a quota may be wrong) with a warning that it will be slower."""
    active = getattr(_active, "plan", None)
    if active is not None:
        yield active
        return
    threads = check_threads(threads)
    cores = available_cores()
    plan = plan_threads(threads, reserve=reserve, cores=cores)
    if threads is not None and threads > cores.count:
        warnings.warn(
            f"threads={threads} is more than the {cores.describe()} this process may use now: "
            f"threads will wait for one another and the run will be slower than with "
            f"threads={cores.count} (or leave it out to size the threads automatically)",
            UserWarning,
            stacklevel=3,
        )
    import torch

    owner = threading.get_ident()
    before = torch.get_num_threads()
    limits = None
    try:
        torch.set_num_threads(plan.torch)
        limits = _threadpool_limits(plan)
        _active.plan = plan
        log.debug("threads: %s", plan.describe())
        yield plan
    finally:
        if threading.get_ident() == owner:  # the settings are per thread (OpenMP)
            _active.plan = None
            if limits is not None:
                limits.restore_original_limits()
            torch.set_num_threads(before)


def with_thread_policy(fn):
    """Decorate a model's method (a generator's body from its first item to its end or
    close, or a plain call) to run under :func:`thread_policy` with the model's
    ``settings.threads``."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(model, *args, **kwargs):
            with thread_policy(_threads_of(model)):
                yield from fn(model, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def call(model, *args, **kwargs):
        with thread_policy(_threads_of(model)):
            return fn(model, *args, **kwargs)

    return call


def _threads_of(model) -> int | None:
    return getattr(getattr(model, "settings", None), "threads", None)


def add_threads_option(parser) -> None:
    """``--threads N`` on an argparse (sub)parser: checked by :func:`check_threads`, a bad
    value ends the command with argparse's usage error (exit code 2)."""
    import argparse

    def threads(text: str) -> int | None:
        try:
            return check_threads(text, "--threads")
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--threads",
        type=threads,
        default=None,
        metavar="N",
        help="CPU threads to keep busy (default: the cores this process may use now: "
        "affinity, cgroup quota, Dask worker threads, other processes' load; see docs)",
    )
