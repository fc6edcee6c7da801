"""The thread policy (issue 21): the cores a process may use (affinity, cgroup quota, Dask
worker threads, other processes' load), how a run's pools are sized from them, and that a
run applies the sizes and puts back what was there before. Fakes stand for the machine."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch

import napari_sansa as ns
from conftest import make_image
from napari_sansa.core import threads as th
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.settings import ModelSettings


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """An 8-CPU machine with no quota, no load, no Dask and no OMP_NUM_THREADS; the test
    changes what it needs (``machine.cpus``, ``machine.others``, files under cgroup)."""
    m = types.SimpleNamespace(cpus=set(range(8)), others=0.0, cgroup=tmp_path / "cgroup")
    m.cgroup.mkdir()
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(m.cpus), raising=False)
    monkeypatch.setattr(th, "CGROUP_ROOT", str(m.cgroup))
    monkeypatch.setattr(th, "others_busy", lambda wait=None: m.others)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    return m


# -- the setting ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expect", [(None, None), ("auto", None), (3, 3), ("4", 4), (2.0, 2)]
)
def test_check_threads_takes_whole_numbers_and_auto(value, expect):
    assert th.check_threads(value) == expect


@pytest.mark.parametrize(
    "value, words",
    [
        (0, ">= 1, got 0"),
        (-2, ">= 1, got -2"),
        ("0", ">= 1, got 0"),
        (1.5, "whole number"),
        ("two", "whole number"),
        (True, "whole number"),
        ([2], "whole number"),
    ],
)
def test_check_threads_refuses_what_is_not_a_count(value, words):
    with pytest.raises(InvalidInputError, match=words):
        th.check_threads(value)


def test_model_settings_check_threads():
    assert ModelSettings(threads=2).threads == 2
    assert ModelSettings(threads="auto").threads is None
    with pytest.raises(InvalidInputError, match=">= 1"):
        ModelSettings(threads=0)
    with pytest.raises(InvalidInputError, match="whole number"):
        ModelSettings.from_options(threads=2.5)


# -- what the process may use -----------------------------------------------------------------
def test_affinity_is_the_budget_on_a_quiet_machine(machine):
    machine.cpus = {0, 2, 5}
    cores = th.available_cores()
    assert (cores.count, cores.affinity, cores.quota, cores.worker) == (3, 3, None, None)


def test_cgroup_v2_quota_caps_the_cores(machine):
    (machine.cgroup / "cpu.max").write_text("250000 100000\n")
    assert th.cgroup_quota() == 2.5
    assert th.available_cores().count == 3  # 2.5 cores keep 3 threads busy part of the time
    (machine.cgroup / "cpu.max").write_text("max 100000\n")
    assert th.cgroup_quota() is None
    assert th.available_cores().count == 8


def test_cgroup_v1_quota_caps_the_cores(machine):
    (machine.cgroup / "cpu").mkdir()
    (machine.cgroup / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (machine.cgroup / "cpu" / "cpu.cfs_period_us").write_text("50000")
    assert th.cgroup_quota() == 2.0
    assert th.available_cores().count == 2
    (machine.cgroup / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert th.cgroup_quota() is None


def test_a_damaged_cgroup_file_means_no_quota(machine):
    (machine.cgroup / "cpu.max").write_text("lots 100000")
    assert th.cgroup_quota() is None
    assert th.available_cores().count == 8


def test_omp_num_threads_set_by_the_person_caps_the_cores(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert th.available_cores().count == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "nonsense")
    assert th.available_cores().count == 8


def test_other_processes_load_leaves_fewer_cores(machine):
    machine.others = 6.2
    assert th.available_cores().count == 2
    machine.others = 8.0  # every core busy: still one
    assert th.available_cores().count == 1
    assert "kept busy by other processes" in th.available_cores().describe()


def _fake_worker(monkeypatch, nthreads, executing=1):
    worker = types.SimpleNamespace(
        nthreads=nthreads, state=types.SimpleNamespace(executing_count=executing)
    )
    module = types.ModuleType("distributed")
    module.get_worker = lambda: worker
    monkeypatch.setitem(sys.modules, "distributed", module)
    return worker


def test_a_dask_worker_with_fewer_threads_than_the_host_uses_its_count(machine, monkeypatch):
    _fake_worker(monkeypatch, nthreads=2)
    cores = th.available_cores()
    assert (cores.count, cores.worker) == (2, 2)
    assert "Dask worker threads 2" in cores.describe()
    # the worker's threads are shared by the tasks it runs at once
    _fake_worker(monkeypatch, nthreads=4, executing=2)
    assert th.available_cores().count == 2
    # a worker with more threads than the host is capped by the host
    _fake_worker(monkeypatch, nthreads=32)
    assert th.available_cores().count == 8


def test_the_omp_num_threads_dask_s_nanny_sets_is_not_a_cap(machine, monkeypatch):
    """Dask's nanny starts every worker process with OMP_NUM_THREADS=1
    (``distributed.nanny.pre-spawn-environ``): a ``--nthreads 4`` worker runs torch on 4."""
    import dask.config

    _fake_worker(monkeypatch, nthreads=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1}}):
        cores = th.available_cores()
        assert (cores.count, cores.env) == (4, None)
        # a value Dask does not set is the person's: it caps
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert th.available_cores().count == 2
    # the person's OMP_NUM_THREADS=1 outside a worker still caps
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delitem(sys.modules, "distributed")
    assert th.available_cores().count == 1


def test_outside_a_dask_worker_nothing_is_capped(machine, monkeypatch):
    module = types.ModuleType("distributed")

    def get_worker():
        raise ValueError("No worker found")

    module.get_worker = get_worker
    monkeypatch.setitem(sys.modules, "distributed", module)
    assert th.dask_worker_threads() is None
    assert th.available_cores().count == 8


def _stat(busy: dict[int, int], idle: dict[int, int]) -> str:
    lines = ["cpu  0 0 0 0 0 0 0 0"]
    for c in sorted(busy):
        lines.append(f"cpu{c} {busy[c]} 0 0 {idle[c]} 0 0 0 0")
    return "\n".join(lines) + "\nintr 1 2 3\n"


def test_others_busy_counts_busy_cpus_less_this_process(monkeypatch, tmp_path):
    """Two CPUs busy all the time over 1 s, of which this process used 0.5 CPU-s: 1.5
    cores kept busy by others; CPUs outside the affinity mask are not counted."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(th, "PROC_STAT", str(stat))
    monkeypatch.setattr(th, "_affinity_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(th, "_last_sample", None)
    clock = iter([10.0, 11.0])
    own = iter([5.0, 5.5])
    monkeypatch.setattr(th.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(th.time, "process_time", lambda: next(own))
    monkeypatch.setattr(th.time, "sleep", lambda s: stat.write_text(after))
    before = _stat(dict.fromkeys(range(5), 0), dict.fromkeys(range(5), 0))
    # cpu0, cpu1 busy 100 jiffies, cpu2, cpu3 idle 100, cpu4 (not ours) busy 100
    after = _stat({0: 100, 1: 100, 2: 0, 3: 0, 4: 100}, {0: 0, 1: 0, 2: 100, 3: 100, 4: 0})
    stat.write_text(before)
    assert th.others_busy(wait=1.0) == pytest.approx(1.5)


def test_others_busy_is_zero_without_proc_stat(monkeypatch, tmp_path):
    monkeypatch.setattr(th, "PROC_STAT", str(tmp_path / "missing"))
    monkeypatch.setattr(th, "_last_sample", None)
    assert th.others_busy(wait=0.0) == 0.0


# -- sizing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "count, reserve, torch_threads",
    [(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 0, 3), (8, 0, 7), (2, 1, 1), (1, 1, 1), (8, 1, 6)],
)
def test_plan_never_has_more_busy_threads_than_cores(count, reserve, torch_threads):
    cores = th.Cores(count, count)
    plan = th.plan_threads(None, reserve=reserve, cores=cores)
    assert plan.torch == torch_threads
    assert (plan.blas, plan.prefetch, plan.writers) == (1, 1, 1)
    budget = max(1, count - reserve)
    # torch's threads, plus one core for the reading/writing threads and NumPy from 4 on
    assert plan.torch + (plan.blas if budget >= 4 else 0) <= budget
    assert plan.prefetch_workers("cpu") == 1
    assert plan.prefetch_workers("cuda") == min(4, budget)


def test_plan_takes_the_setting_over_the_cores():
    plan = th.plan_threads(5, cores=th.Cores(2, 2))
    assert (plan.cores, plan.torch, plan.requested) == (5, 4, 5)
    assert "threads=5" in plan.describe()


# -- applying it ------------------------------------------------------------------------------
def test_policy_sets_torch_and_numpy_pools_during_a_run_and_puts_them_back(machine):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    machine.cpus = {0, 1}
    limits = threadpoolctl.threadpool_limits(limits={"blas": 2})
    torch.set_num_threads(1)  # torch's OpenMP pool: 1 thread
    try:
        before = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
        with th.thread_policy() as plan:
            assert torch.get_num_threads() == plan.torch == 2
            info = threadpoolctl.threadpool_info()
            assert {i["num_threads"] for i in info if i["user_api"] == "blas"} <= {1}
            assert {i["num_threads"] for i in info if i["user_api"] == "openmp"} <= {2}
            with th.thread_policy(1) as inner:  # inside a run: the outer plan stays
                assert inner is plan and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        after = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
        assert after == before
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(1)


def test_policy_puts_torch_back_after_an_error(machine):
    machine.cpus = {0, 1, 2}
    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="boom"), th.thread_policy():
        assert torch.get_num_threads() == 3
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 1
    assert getattr(th._active, "plan", None) is None


def test_more_threads_than_cores_runs_with_a_warning_that_it_is_slower(machine):
    machine.cpus = {0, 1}
    torch.set_num_threads(1)
    with pytest.warns(UserWarning, match="slower than with threads=2"), th.thread_policy(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with th.thread_policy(2):  # as many as the cores: no warning
            pass


def _reference():
    mask = np.zeros((96, 128), bool)
    mask[20:50, 30:80] = True
    return ns.Reference(make_image(0), [ns.Mask(mask, label=1)])


def test_a_model_run_applies_the_policy_and_puts_it_back(machine, weights, model):
    """The API (and through it the command line and Dask tasks): torch's threads are the
    plan's while the targets are computed, and what they were before after the run."""
    machine.cpus = {0, 1, 2}
    torch.set_num_threads(1)
    ref = _reference()
    seen = []
    for _ in model.segment_iter([ref], [make_image(1), make_image(2)]):
        seen.append(torch.get_num_threads())
    assert seen == [3, 3]
    assert torch.get_num_threads() == 1
    # the model's own setting; more than the cores warns
    from conftest import load_test_model

    two = load_test_model(weights, threads=2)
    assert two.settings.threads == 2
    assert [torch.get_num_threads() for _ in two.segment_iter([ref], [make_image(1)])] == [2]
    assert torch.get_num_threads() == 1
    many = load_test_model(weights, threads=5)  # 5 busy threads: torch's 4 and a helper core
    with pytest.warns(UserWarning, match="slower"):
        assert [torch.get_num_threads() for _ in many.segment_iter([ref], [make_image(1)])] == [4]
    assert torch.get_num_threads() == 1


def test_a_stopped_run_puts_the_threads_back(machine, model):
    machine.cpus = {0, 1}
    torch.set_num_threads(1)
    ref = _reference()
    run = model.segment_iter([ref], [make_image(1), make_image(2)])
    next(run)
    assert torch.get_num_threads() == 2
    run.close()
    assert torch.get_num_threads() == 1


def test_the_widget_leaves_a_core_for_napari(machine):
    from napari_sansa.napari.worker import leave_a_core_for_napari

    machine.cpus = {0, 1, 2, 3}
    torch.set_num_threads(1)
    with leave_a_core_for_napari():
        assert torch.get_num_threads() == 3
    with leave_a_core_for_napari(2):  # the advanced setting wins
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_a_dask_task_is_sized_to_its_worker(machine, monkeypatch):
    """A ``dask worker --nthreads 1`` on an 8-core host runs torch on one thread."""
    _fake_worker(monkeypatch, nthreads=1)
    torch.set_num_threads(1)
    from napari_sansa.dataset import distributed

    seen = []
    monkeypatch.setattr(distributed.models, "cached_model", lambda source: "model")
    monkeypatch.setattr(
        distributed, "process_targets", lambda *a: seen.append(torch.get_num_threads()) or []
    )
    torch.set_num_threads(4)
    try:
        distributed._chunk_task(ModelSettings(name="x"), None, [], "out", None, False, False)
        assert seen == [1]
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(1)


# -- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["segment", "finetune"])
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two"])
def test_cli_refuses_bad_threads_with_exit_2(command, value, tmp_path, capsys):
    from napari_sansa.cli import main

    args = {
        "segment": ["segment", str(tmp_path), "-o", str(tmp_path / "out")],
        "finetune": ["finetune", "--train", str(tmp_path), "-o", str(tmp_path / "a.pth")],
    }[command]
    with pytest.raises(SystemExit) as exc:
        main([*args, f"--threads={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threads" in err and ("whole number" in err or ">= 1" in err)
    assert not (tmp_path / "out").exists()


def test_cli_threads_reach_the_model_settings(tmp_path, monkeypatch):
    from napari_sansa import dataset
    from napari_sansa.cli import main
    from napari_sansa.dataset import finetune

    got = {}

    def fake_segment_dataset(targets, references, out, options=None, *, model, **kw):
        got["segment"] = model.threads
        raise InvalidInputError("stop here")

    monkeypatch.setattr(dataset, "segment_dataset", fake_segment_dataset)
    monkeypatch.setattr(dataset, "load_reference_pair", lambda *a, **k: "ref")
    argv = ["segment", str(tmp_path), "-r", "a", "b", "-o", str(tmp_path / "out"), "--threads=3"]
    assert main(argv) == 2
    assert got["segment"] == 3
    import napari_sansa.core.models.loading as loading

    monkeypatch.setattr(loading, "load_settings", lambda s: s)
    args = finetune.add_parser(__import__("argparse").ArgumentParser().add_subparsers()).parse_args(
        ["--train", "x", "-o", "a.pth", "--threads", "2"]
    )
    assert finetune._load_model(args).threads == 2


def _in_a_task():
    with th.thread_policy() as plan:
        return th.dask_worker_threads(), plan.torch, torch.get_num_threads()


def test_a_real_dask_worker_reports_its_threads(monkeypatch):
    """On a real (in-process) Dask worker of 1 thread on a host of more cores."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(th, "others_busy", lambda wait=None: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert client.submit(_in_a_task, pure=False).result(timeout=60) == (1, 1, 1)
    assert th.dask_worker_threads() is None  # not in a worker here
