"""Does the default thread policy keep up with the best thread setting? (issue 21)

Runs the same ``napari-sansa segment`` command (a small SANSA with random weights: SAM2
Hiera-tiny at a 256 px model input, written to a temporary folder; no download) on N
random smooth images, once per setting: the default (no ``--threads``) and each
``--threads N`` of a sweep, each in a fresh process and output folder, repeats
interleaved so that a drift of the machine touches every setting alike. Conditions:

* ``quiet``: nothing else runs (as far as this script knows);
* ``load``: one busy process per core (a Python loop each), started before and stopped
  after the condition's runs: the competing load of the issue;
* ``dask``: the same command through a local Dask cluster of 2 worker processes on this
  host (``--scheduler``; each worker has cores / 2 threads); quiet. Each setting is also
  run with ``--chunk-size 16`` (all 12 images in one task: the default before 0.2, which
  kept one worker idle), so that the default is compared with the best of both.

Each condition starts with one untimed run (the file cache; Dask workers load the model
then and keep it). Printed per condition: the median wall time of the command and the
median time of the run itself (the CLI's "labelled ... in X s"), over ``--repeats`` (at
least 3 for figures worth quoting), and the default's throughput relative to the best
setting of the sweep (the issue's goals: >= 0.9 under load, >= 0.95 quiet).
OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS are removed from the commands'
environment so that the default is the policy's own. A benchmark, not a test: it prints,
it asserts nothing. Run it on a machine nothing else uses:

    .venv/bin/python benchmarks/bench_threads.py --images 12 --repeats 3 \\
        --conditions quiet,load,dask --json threads.json

A tiny check that it works: ``--images 2 --image 64 --repeats 1 --sweep 1 --conditions
quiet``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

CONFIG = "sam2_hiera_t"
MODEL_SIZE = 256
_RUN_TIME = re.compile(r"labelled \d+ target\(s\).* in ([0-9.]+) s")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _spin() -> None:  # a competing process: one core kept busy
    x = 0
    while True:
        x += 1


def _files(root: Path, n: int, side: int) -> dict:
    import imageio.v3 as iio
    import numpy as np

    from napari_sansa.core.models.random_weights import write_random_checkpoints

    sam2, adapters = write_random_checkpoints(
        root / "weights", CONFIG, image_size=MODEL_SIZE, seed=0
    )
    data = root / "data"
    data.mkdir()
    for i, img in enumerate(common.images(n + 1, shape=(side, side), seed=1)):
        if i == 0:
            iio.imwrite(root / "ref.png", img)
        else:
            iio.imwrite(data / f"img{i:03d}.png", img)
    lab = common.blob_mask((side, side), (side // 2, side // 2), side // 4).astype(np.uint8)
    iio.imwrite(root / "ref_labels.png", lab)
    return {"sam2": sam2, "adapters": adapters, "data": data}


def _command(root: Path, files: dict, out: Path, setting, scheduler=None) -> list[str]:
    threads, chunk = setting if isinstance(setting, tuple) else (setting, None)
    cmd = [
        sys.executable,
        "-m",
        "napari_sansa.cli",
        "segment",
        str(files["data"]),
        "-r",
        str(root / "ref.png"),
        str(root / "ref_labels.png"),
        "-o",
        str(out),
        "--config",
        CONFIG,
        "--sam2-checkpoint",
        str(files["sam2"]),
        "--adapter-checkpoint",
        str(files["adapters"]),
        "--image-size",
        str(MODEL_SIZE),
        "--device",
        "cpu",
        "--quiet",
    ]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if scheduler is not None:
        cmd += ["--scheduler", scheduler]
    if chunk is not None:
        cmd += ["--chunk-size", str(chunk)]
    return cmd


def _label(setting) -> str:
    threads, chunk = setting if isinstance(setting, tuple) else (setting, None)
    label = "default" if threads is None else f"--threads {threads}"
    return label + ("" if chunk is None else f" --chunk-size {chunk}")


def _env() -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)
    return env


def _run_once(root, files, threads, scheduler, count: list) -> tuple[float, float]:
    count[0] += 1
    out = root / f"out{count[0]}"
    t0 = time.perf_counter()
    done = subprocess.run(
        _command(root, files, out, threads, scheduler),
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"the command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = _RUN_TIME.search(done.stderr)
    return wall, float(found.group(1)) if found else float("nan")


def _condition(name, root, files, settings, repeats, count) -> dict:
    busy, cluster = [], None
    scheduler = None
    if name == "load":
        busy = [mp.Process(target=_spin, daemon=True) for _ in range(_cores())]
        for p in busy:
            p.start()
        time.sleep(1.0)  # the load is running before the first command starts
    elif name == "dask":
        from dask.distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=max(1, _cores() // 2),
            processes=True,
            dashboard_address=None,
        )
        scheduler = cluster.scheduler_address
    times: dict = {s: ([], []) for s in settings}
    try:
        # one untimed run first: the file cache, and the Dask workers load the model once
        _run_once(root, files, None, scheduler, count)
        for _ in range(repeats):
            for s in settings:  # interleaved: a drift of the machine touches every setting
                wall, run = _run_once(root, files, s, scheduler, count)
                times[s][0].append(wall)
                times[s][1].append(run)
    finally:
        for p in busy:
            p.kill()
            p.join()
        if cluster is not None:
            cluster.close()
    return {s: (statistics.median(w), statistics.median(r)) for s, (w, r) in times.items()}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12, help="target images (12)")
    p.add_argument("--image", type=int, default=256, help="image side in pixels (256)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting (3)")
    p.add_argument(
        "--sweep", default=None, help="thread settings, e.g. 1,2,4 (default: 1 to the cores)"
    )
    p.add_argument(
        "--conditions", default="quiet,load", help="quiet, load and/or dask (quiet,load)"
    )
    args = p.parse_args()
    sweep = (
        [int(v) for v in args.sweep.split(",")]
        if args.sweep
        else sorted({1, 2, *range(2, _cores() + 1, 2), _cores()})
    )
    settings = [None, *sweep]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    rows, results = [], {"cores": _cores(), "images": args.images, "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="sansa-threads-") as tmp:
        root = Path(tmp)
        files = _files(root, args.images, args.image)
        count = [0]
        for name in conditions:
            these, swept = settings, sweep
            if name == "dask":  # also all images in one task, as before 0.2
                one_task = [(s, 16) for s in settings]
                these, swept = settings + one_task, sweep + one_task
            medians = _condition(name, root, files, these, args.repeats, count)
            best = min(medians[s][1] for s in swept)
            best_setting = _label(min(swept, key=lambda s: medians[s][1]))
            for s in these:
                wall, run = medians[s]
                label = _label(s)
                rows.append(
                    (
                        f"{name:5} {label:28}",
                        f"wall {wall:7.2f} s  run {run:7.2f} s  best/this {best / run:5.2f}",
                    )
                )
            ratio = best / medians[None][1]
            rows.append(
                (
                    f"{name:5} default vs best",
                    f"{ratio:.2f} of the best setting's throughput ({best_setting})",
                )
            )
            results[name] = {
                "median_s": {_label(s): medians[s] for s in these},
                "default_vs_best": ratio,
                "best_setting": best_setting,
            }
    common.report(
        f"napari-sansa segment: {args.images} images of {args.image} px, Hiera-tiny at "
        f"{MODEL_SIZE} px, {_cores()} cores, median of {args.repeats}",
        rows,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()
