"""Shared helpers of the benchmarks: random-weight models, images, timing, reporting.

Speed and memory figures are measured here, never asserted in the test suite.
Ratios are measured side by side in one run; absolute times only mean something
on the machine that printed them (and on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
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
