"""The Dask path: a LocalCluster of 2 worker processes on loopback gives the local run's outputs."""

from __future__ import annotations

import csv
import importlib.util
import os

import numpy as np
import pytest
import tifffile
from dataset_files import write_reference, write_targets

from napari_sansa.core.atomic import PARTIAL

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(autouse=True)
def _dask_config_restored():
    """A client whose scheduler went away does not always take back the settings it made
    (``scheduler: dask.distributed``): later tests in the same process would then compute
    dask arrays on a cluster that is gone. Each test here leaves dask's settings as found."""
    import copy

    import dask

    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


@pytest.fixture(scope="module")
def cluster():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env={"OMP_NUM_THREADS": "1"},
    )
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture()
def job(tmp_path, weights):
    from napari_sansa.dataset import ModelSource, load_reference_pair

    data = write_targets(tmp_path / "data", 8, seed=50, name="img{:02d}.png")
    write_reference(tmp_path, "lab.png")
    ref = load_reference_pair(tmp_path / "ref.png", tmp_path / "lab.png")
    source = ModelSource(
        config="sam2_hiera_t",
        sam2_checkpoint=str(weights[0]),
        adapter_checkpoint=str(weights[1]),
        device="cpu",
        image_size=256,
    )
    return tmp_path, data, ref, source


def _outputs(folder):
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


@pytest.mark.slow
def test_cluster_gives_the_local_results(cluster, job):
    from napari_sansa.dataset import segment_dataset

    _, client = cluster
    root, data, ref, source = job
    local = segment_dataset(data, [ref], root / "local", model=source, progress=False)
    dist = segment_dataset(
        data, [ref], root / "dist", model=source, client=client, chunk_size=3, progress=False
    )
    assert local.ok and dist.ok and dist.done == 8
    a, b = _outputs(root / "local"), _outputs(root / "dist")
    assert a.keys() == b.keys() and len(a) == 8
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert (root / "dist" / "scores.csv").read_text().count("\n") == 9


def _profiled(worker) -> set:
    from napari_sansa.dataset.dask_plugins import PROFILER_CALLBACKS

    return set(PROFILER_CALLBACKS) & set(worker.periodic_callbacks)


def test_a_run_stops_the_workers_profiler_on_python_3_11(job):
    """Python 3.11 can deadlock a worker whose profiler samples its threads (it hung this
    suite): a run registers a plugin that stops it, on its workers and on those that join
    later; on 3.12 and later the workers are left as they are."""
    import dask

    from napari_sansa.dataset import segment_dataset
    from napari_sansa.dataset.dask_plugins import PROFILER_DEADLOCKS, StopProfiler

    root, data, ref, source = job
    profile_on = dask.config.set({"distributed.worker.profile.enabled": True})  # the default
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    with profile_on, cluster, distributed.Client(cluster) as client:
        (worker,) = cluster.workers.values()
        assert _profiled(worker) == {"profile", "profile-cycle"}
        report = segment_dataset(data, [ref], root / "out", model=source, client=client,
                                 progress=False)  # fmt: skip
        assert report.ok and report.done == 8
        cluster.scale(2)  # a worker that joins after the run started
        client.wait_for_workers(2, timeout=60)
        for w in cluster.workers.values():
            assert _profiled(w) == (set() if PROFILER_DEADLOCKS else {"profile", "profile-cycle"})
        assert (StopProfiler.name in worker.plugins) == PROFILER_DEADLOCKS


def _die_after_two_outputs(folder: str) -> None:
    """Run on the workers: each kills itself (SIGKILL) right after writing its second
    output, having noted in ``folder/killed-PID.json`` which outputs it finished. The
    workers the nannies start again are not patched, so the run then completes."""
    import json
    import os
    import signal

    replace, written = os.replace, []

    def replace_then_die(src, dst):
        replace(src, dst)
        if str(dst).endswith(".tif"):
            written.append(str(dst))
            if len(written) == 2:
                with open(os.path.join(folder, f"killed-{os.getpid()}.json"), "w") as fh:
                    json.dump({p: os.stat(p).st_mtime_ns for p in written}, fh)
                os.kill(os.getpid(), signal.SIGKILL)

    replace_then_die.original = replace
    os.replace = replace_then_die


def _undo_die_after_two_outputs() -> None:
    import os

    os.replace = getattr(os.replace, "original", os.replace)


@pytest.mark.slow
def test_killing_a_worker_loses_no_finished_output(cluster, job):
    """Workers die at a known point (after their second output), not at a time: the
    first worker to write two outputs dies, whichever the scheduler chose."""
    import json

    from napari_sansa.dataset import segment_dataset

    _, client = cluster
    root, data, ref, source = job
    write_targets(data, 16, seed=50, name="img{:02d}.png")
    out = root / "killed"
    client.run(_die_after_two_outputs, str(root))
    try:
        report = segment_dataset(
            data, [ref], out, model=source, client=client, chunk_size=2, progress=False
        )
    finally:
        client.wait_for_workers(2, timeout=120)  # restarted by the nannies
        client.run(_undo_die_after_two_outputs)  # a worker that did not die is patched still
    records = sorted(root.glob("killed-*.json"))
    assert records, "no worker died"
    finished = {p: t for r in records for p, t in json.loads(r.read_text()).items()}
    assert len(finished) == 2 * len(records)
    assert report.ok
    outputs = sorted(out.glob("*.tif"))
    assert len(outputs) == 16
    for p, mtime in finished.items():
        assert os.stat(p).st_mtime_ns == mtime  # finished outputs were kept, not redone
    for p in outputs:
        assert tifffile.imread(p).shape == (96, 128)
    assert not list(out.rglob(f"*{PARTIAL}"))


def test_cli_scheduler_option(cluster, job, weights):
    from napari_sansa.cli import main

    local_cluster, _ = cluster
    root, data, _, _ = job
    args = _segment_args(
        root, data, weights, "--scheduler", local_cluster.scheduler_address, "--chunk-size", "4"
    )
    assert main(args) == 0
    assert len(list((root / "cli").glob("*.tif"))) == 8
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main([*args[:-4], "--scheduler", "tcp://127.0.0.1:9", "--chunk-size", "4"]) == 2


def _segment_args(root, data, weights, *options) -> list[str]:
    return [
        "segment",
        str(data),
        "--reference",
        str(root / "ref.png"),
        str(root / "lab.png"),
        "--out",
        str(root / "cli"),
        "--sam2-checkpoint",
        str(weights[0]),
        "--adapter-checkpoint",
        str(weights[1]),
        "--image-size",
        "256",
        "--device",
        "cpu",
        "--quiet",
        *options,
    ]


@pytest.mark.parametrize(
    "options, words",
    [
        (["--scheduler", "not an address"], ["'not an address' is not a Dask scheduler address"]),
        (["--scheduler", "tcp://host"], ["missing port number", "tcp://HOST:PORT"]),
        (["--scheduler", "tcp://127.0.0.1:99999"], ["port 99999 is not in 1-65535"]),
        (["--scheduler", "foo://x:1"], ["unknown address scheme 'foo'"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--worker-wait", "0"], ["seconds > 0, got 0.0"]),
        (["--scheduler", "tcp://127.0.0.1:9", "--worker-wait", "nan"], ["seconds > 0, got nan"]),
        (
            ["--scheduler", "tcp://127.0.0.1:9", "--worker-wait", "inf"],
            ["must be a finite number of seconds > 0, got inf"],
        ),
        (["--worker-wait", "5"], ["--worker-wait applies to Dask runs"]),
        (["--scheduler", ""], ["--scheduler was given an empty address"]),
        (["--scheduler", " "], ["--scheduler was given an empty address"]),
        (["--scheduler", "inproc://x"], ["inproc:// names a scheduler inside one Python process"]),
        (
            ["--scheduler", "tls://127.0.0.1:8786"],
            ["uses TLS, but Dask has no TLS settings", "distributed.comm.tls.ca-file"],
        ),
    ],
)
def test_cli_bad_scheduler_options_are_refused_before_anything_is_read(
    tmp_path, capsys, options, words
):
    """The references named do not exist: the options are refused first, by name."""
    from napari_sansa.cli import main

    args = _segment_args(tmp_path / "absent", tmp_path, ("w.pt", "a.pth"), *options)
    assert main(args) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert "absent" not in err and "Traceback" not in err
    assert not (tmp_path / "absent" / "cli").exists()


@pytest.fixture()
def in_process_cluster():
    """A scheduler and one worker in this process (threads): quick to start and stop."""
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def test_workers_stopped_mid_run_end_it_after_the_wait_keeping_finished_outputs(
    in_process_cluster, job
):
    import time

    from napari_sansa.dataset import WorkersLostError, segment_dataset

    cluster, client = in_process_cluster
    root, data, ref, source = job
    out = root / "lost"
    stopped = []

    def stop_the_workers(progress):
        if not stopped:  # the first chunk is done: every worker goes
            cluster.scale(0)
            deadline = time.monotonic() + 30
            while client.nthreads() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not client.nthreads()
            stopped.append(time.monotonic())

    with pytest.raises(WorkersLostError) as info:
        segment_dataset(
            data,
            [ref],
            out,
            model=source,
            client=client,
            chunk_size=1,
            progress=False,
            on_progress=stop_the_workers,
            worker_wait=1.5,
        )
    waited = time.monotonic() - stopped[0]
    assert 1.5 <= waited < 10, waited
    text = str(info.value)
    assert "no Dask worker has been connected" in text and "for 1.5 s" in text
    assert "outputs finished are kept" in text and "--worker-wait" in text
    finished = sorted(p.name for p in out.glob("*.tif"))
    assert 1 <= len(finished) < 8
    with open(out / "scores.csv") as fh:
        ok = sorted(r["output"] for r in csv.DictReader(fh) if r["status"] == "ok")
    assert ok and set(ok) <= set(finished)  # what was reported done is on disk
    assert not list(out.rglob(f"*{PARTIAL}"))


def test_cli_run_waits_for_the_first_worker_beyond_the_worker_wait(job, weights, capsys):
    """A batch cluster whose jobs are still queued has no worker yet: the --worker-wait
    clock only runs once a worker has been seen, so a worker that connects later than
    --worker-wait seconds after the start still does the run."""
    import threading
    import time

    from napari_sansa.cli import main

    root, data, _, _ = job
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        args = _segment_args(root, data, weights, "--scheduler", cluster.scheduler_address)
        started = time.monotonic()
        late = threading.Timer(2.0, cluster.scale, args=(1,))  # > --worker-wait 0.5
        late.start()
        try:
            assert main([*args, "--worker-wait", "0.5"]) == 0
        finally:
            late.join()
    assert time.monotonic() - started >= 2.0
    assert len(list((root / "cli").glob("*.tif"))) == 8
    err = capsys.readouterr().err
    assert err.count("waiting for a Dask worker to connect") == 1, err  # said once


class _Py310AsyncioTimeout(Exception):
    """asyncio.TimeoutError as it is on Python 3.10: not the built-in TimeoutError."""


def test_wait_timeouts_of_python_3_10_are_caught(monkeypatch):
    """distributed's wait(timeout=) raises asyncio.TimeoutError, a class of its own on
    Python 3.10 (merged into TimeoutError in 3.11): it means "nothing finished yet"."""
    import asyncio

    import dask.distributed

    from napari_sansa.dataset import distributed as dd

    monkeypatch.setattr(asyncio, "TimeoutError", _Py310AsyncioTimeout)
    calls = []

    def wait(pending, timeout, return_when):
        calls.append(timeout)
        if len(calls) < 3:
            raise _Py310AsyncioTimeout()
        return set(pending), set()

    class Client:
        def nthreads(self):
            return {"w": 1}

    monkeypatch.setattr(dask.distributed, "wait", wait)
    assert list(dd._finished(Client(), ["f"], 60.0, lambda: "")) == ["f"]
    assert len(calls) == 3


def test_cli_scheduler_of_a_transport_not_installed_is_a_message(job, weights, capsys):
    """ucx:// is a known scheme whose transport (distributed-ucxx) is not installed here:
    Client raises TypeError (an abstract connector)."""
    pytest.importorskip("distributed.comm.ucx")
    from napari_sansa.cli import main

    root, data, _, _ = job
    if importlib.util.find_spec("distributed_ucxx") is not None:
        pytest.skip("UCX is installed here")
    assert main(_segment_args(root, data, weights, "--scheduler", "ucx://127.0.0.1:1")) == 2
    err = capsys.readouterr().err
    assert "Dask cannot connect to it from here" in err and "distributed-ucxx" in err, err
    assert "Traceback" not in err


def test_a_scheduler_lost_mid_run_is_a_message_keeping_finished_outputs(job):
    """The scheduler stops after the first chunk (the client stays): once the client has
    tried to reconnect for the connect timeout, its futures are cancelled."""
    import dask

    from napari_sansa.dataset import segment_dataset
    from napari_sansa.dataset.distributed import SchedulerLostError

    root, data, ref, source = job
    out = root / "gone"
    closed = []

    def stop_the_scheduler(progress):
        if not closed:  # the first chunk is done: the scheduler goes, the client stays
            closed.append(True)
            cluster.sync(cluster.scheduler.close)

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        )
        client = distributed.Client(cluster)
        try:
            with pytest.raises(SchedulerLostError) as info:
                segment_dataset(
                    data,
                    [ref],
                    out,
                    model=source,
                    client=client,
                    chunk_size=1,
                    progress=False,
                    on_progress=stop_the_scheduler,
                )
        finally:
            client.close()
            cluster.close()
    text = str(info.value)
    assert "the Dask scheduler at" in text and "went away" in text, text
    assert "run the same command again" in text and "outputs finished are kept" in text
    assert getattr(info.value, "exit_code", None) == 1
    finished = sorted(p.name for p in out.glob("*.tif"))
    assert 1 <= len(finished) < 8
    assert not list(out.rglob(f"*{PARTIAL}"))


def test_a_scheduler_gone_before_the_run_is_the_same_message(job):
    """The scheduler goes between the client's start and the run's first request (the
    worker plugin of Python 3.11 is that request): "went away", not a bare connect
    error."""
    import dask

    from napari_sansa.dataset.distributed import SchedulerLostError, prepare_dask
    from napari_sansa.dataset.settings import RunSettings

    _, _, ref, source = job
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        cluster = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None)
        client = distributed.Client(cluster)
        try:
            cluster.sync(cluster.scheduler.close)
            with pytest.raises(SchedulerLostError, match="the Dask scheduler at .* went away"):
                prepare_dask(client, source, [ref], RunSettings(), worker_wait=5)
        finally:
            client.close()
            cluster.close()
