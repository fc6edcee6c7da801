"""The Dask path: a LocalCluster of 2 worker processes on loopback gives the local run's outputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from dataset_files import write_reference, write_targets

from napari_sansa.core.atomic import PARTIAL

distributed = pytest.importorskip("dask.distributed")


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
    args = [
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
        "--scheduler",
        local_cluster.scheduler_address,
        "--chunk-size",
        "4",
    ]
    assert main(args) == 0
    assert len(list((root / "cli").glob("*.tif"))) == 8
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main([*args[:-4], "--scheduler", "tcp://127.0.0.1:9", "--chunk-size", "4"]) == 2
