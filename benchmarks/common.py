"""Shared helpers of the benchmarks: random-weight models, images, timing, reporting.

Speed and memory figures are measured here, never asserted in the test suite.
Ratios are measured side by side in one run; absolute times only mean something
on the machine that printed them (and on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--device", default="cpu")
    return p


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def random_model(config="sam2_hiera_t", image_size=None, device="cpu", precision="auto", **kw):
    """A SANSA model with random weights written and loaded in the official formats."""
    import napari_sansa as ns
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    folder = Path(tempfile.mkdtemp(prefix="sansa-bench-"))
    sam2, adapters = write_random_checkpoints(folder, config, image_size=image_size, seed=0)
    return ns.load_model(
        config=config,
        sam2_checkpoint=sam2,
        adapter_checkpoint=adapters,
        device=device,
        precision=precision,
        image_size=image_size,
        **kw,
    )


def images(n: int, shape=(512, 512), seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB uint8 images (blobs, like micrographs)."""
    import torch
    import torch.nn.functional as F

    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + i)
        small = torch.rand(1, 3, shape[0] // 32, shape[1] // 32, generator=g)
        img = F.interpolate(small, size=shape, mode="bicubic", align_corners=False)[0]
        img = (img - img.min()) / (img.max() - img.min())
        out.append((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    return out


def blob_mask(shape, center, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 < radius**2


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@contextmanager
def timed(store: dict, key: str, device="cpu"):
    sync(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        sync(device)
        store[key] = store.get(key, 0.0) + time.perf_counter() - t0


def seconds(fn) -> float:
    """Wall-clock seconds of one call of ``fn()`` (on the CPU: no device sync)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """``{key: median seconds}`` of ``repeats`` calls of each of ``fns`` (``{key: fn}``),
    interleaved (each round calls every function once, in order): every variant sees the
    same drift of the machine's speed."""
    times: dict = {}
    for _ in range(repeats):
        for key, fn in fns.items():
            times.setdefault(key, []).append(seconds(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def three_prompt_reference(image):
    """A reference on ``image`` with three classes, each a kind of prompt the model takes
    from a label image or a layer: two blobs (classes 1 and 2) and a box (class 3), placed
    by the image's size."""
    import napari_sansa as ns

    shape = image.shape[:2]
    return ns.Reference(image, [
        ns.Mask(blob_mask(shape, (shape[0] // 3, shape[1] // 3), shape[0] // 6), label=1),
        ns.Mask(blob_mask(shape, (2 * shape[0] // 3, shape[1] // 2), shape[0] // 8), label=2),
        ns.Box((5, 2 * shape[1] // 3, shape[0] // 3, shape[1] - 5), label=3),
    ])  # fmt: skip


# -- peak memory of a command in a fresh process ------------------------------------------

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

#: a child process's memory sampler (a ``str.format`` template: ``{bench}`` is this folder):
#: the process's anonymous resident memory (``RssAnon``, the heap) every 10 ms while
#: ``running``, its peak in ``peak["anon"]`` (MiB); ``status(key)`` reads /proc/self/status
SAMPLER = r"""
import json, sys, threading, time
sys.path.insert(0, {bench!r})

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

peak = {{"anon": 0.0}}
running = True
def sample():
    while running:
        peak["anon"] = max(peak["anon"], status("RssAnon"))
        time.sleep(0.01)
"""

_CLI_CHILD = (
    SAMPLER
    + "{before}"
    + r"""
from napari_sansa.cli import main

base = status("RssAnon")
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
code = main({argv!r})
seconds = time.perf_counter() - t0
running = False
thread.join()
print(json.dumps({{"code": code, "anon_peak_mib": peak["anon"], "anon_before_mib": base,
                  "seconds": seconds, "hwm_mib": status("VmHWM")}}))
"""
)


def _child(code: str, env=None) -> tuple[dict, str]:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(run.stderr)
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


def child_json(code: str, env=None) -> dict:
    """Run the Python ``code`` in a fresh process; the JSON of the last line it prints (an
    error with its stderr if it fails)."""
    return _child(code, env)[0]


def cli_peak(argv: list[str], before: str = "", env=None) -> dict:
    """``napari_sansa.cli.main(argv)`` in a fresh process (after the code ``before``),
    its memory sampled (:data:`SAMPLER`): ``code``, ``anon_peak_mib`` (the peak of
    ``RssAnon`` during the command), ``anon_before_mib``, ``seconds``, ``hwm_mib`` (the
    process's overall peak, ``VmHWM``: file pages included). An error if the command
    exits with another code than 0."""
    result, stderr = _child(_CLI_CHILD.format(bench=BENCH_DIR, before=before, argv=argv), env)
    if result["code"] != 0:
        raise RuntimeError(f"napari-sansa segment exited with {result['code']}: {stderr}")
    return result


def report(title: str, rows: list[tuple], results: dict, json_path: str | None) -> None:
    """Print a two-column table and optionally write ``results`` as JSON."""
    width = max(len(str(k)) for k, _ in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for k, v in rows:
        print(f"{str(k):<{width}}  {v}")
    results = {"benchmark": title, "machine": machine(), "command": " ".join(sys.argv), **results}
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwritten to {json_path}")
