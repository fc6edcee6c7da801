"""How the targets of a Dask run go out in tasks (issue 21): by default every worker
thread of the cluster gets some, so that no worker (and its cores) waits idle."""

from __future__ import annotations

import types

import pytest

from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.distributed import (
    CHUNK_SIZE,
    _chunks,
    _worker_threads,
    chunk_size_for,
)
from napari_sansa.dataset.settings import DatasetOptions, RunSettings


def images(n, kind="image"):
    return [Target(f"img{i:03d}.png", f"img{i:03d}.tif", kind) for i in range(n)]


def client(*nthreads):
    return types.SimpleNamespace(nthreads=lambda: {f"w{i}": n for i, n in enumerate(nthreads)})


def test_12_images_on_2_one_thread_workers_go_out_in_2_tasks():
    """Before, the 16-image default put all 12 in one task: one worker (one core of two)
    did everything while the other waited."""
    targets = images(12)
    size = chunk_size_for(targets, None, _worker_threads(client(1, 1)))
    chunks = _chunks(targets, RunSettings(), size)
    assert [len(c) for c in chunks] == [6, 6]


@pytest.mark.parametrize(
    "n, threads, expect",
    [(12, 2, 6), (13, 2, 7), (1000, 2, CHUNK_SIZE), (3, 8, 1), (40, 4, 10), (12, 0, CHUNK_SIZE)],
)
def test_the_default_chunk_size_spreads_over_the_worker_threads(n, threads, expect):
    assert chunk_size_for(images(n), None, threads) == expect


def test_a_given_chunk_size_is_kept():
    assert chunk_size_for(images(12), 16, 2) == 16
    assert DatasetOptions.make(chunk_size=5).chunk_size == 5
    assert DatasetOptions.make().chunk_size is None  # automatic


def test_stacks_go_alone_and_do_not_count():
    targets = images(4) + images(2, kind="stack")
    size = chunk_size_for(targets, None, 2)
    assert size == 2
    assert sorted(len(c) for c in _chunks(targets, RunSettings(), size)) == [1, 1, 2, 2]


def test_a_scheduler_that_cannot_say_gives_the_default():
    def gone():
        raise OSError("scheduler gone")

    assert _worker_threads(types.SimpleNamespace(nthreads=gone)) == 0
    assert chunk_size_for(images(12), None, 0) == CHUNK_SIZE
