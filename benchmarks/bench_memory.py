"""Benchmark 4: peak memory for 200 targets versus 20 (a stack is streamed).

Each count runs in a fresh process that streams the targets through
``segment_iter`` and keeps only what a batch job keeps (it writes results out),
so the peak resident memory shows what the engine itself holds. The in-memory
feature cache is off, as in ``napari-sansa segment``; when it is on, it adds at
most its budget (``cache_bytes``, 1 GiB by default). Goal: peak(200) <= 1.2 x peak(20).

    python benchmarks/bench_memory.py [--json out.json]
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import parser, report

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {bench!r})
import numpy as np
from common import images, blob_mask, random_model
import napari_sansa as ns
n = {n}
model = random_model(image_size=256, device={device!r}, cache_bytes={cache})
shape = (384, 384)
ref = ns.Reference(images(1, shape)[0], [ns.Mask(blob_mask(shape, (150, 200), 60))])
def frames():
    for i in range(n):
        yield images(1, shape, seed=1000 + i)[0]
areas = 0
for pred in model.segment_iter([ref], frames(), mode={mode!r}):
    areas += int((pred.labels > 0).sum())
print(json.dumps({{"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def peak(n, device, cache, mode):
    import os

    code = CHILD.format(
        bench=os.path.dirname(os.path.abspath(__file__)), n=n, device=device, cache=cache, mode=mode
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs=2, default=(20, 200))
    args = p.parse_args()
    small, large = args.counts
    results, rows = {}, []
    for mode in ("independent", "sequential"):
        a, b = peak(small, args.device, 0, mode), peak(large, args.device, 0, mode)
        results[mode] = {"peak_small_mib": a, "peak_large_mib": b, "ratio": b / a}
        rows.append(
            (
                f"{mode}: peak RSS {small} / {large} targets",
                f"{a:.0f} / {b:.0f} MiB = {b / a:.3f}x (goal <= 1.2x)",
            )
        )
    rows.insert(
        0, ("setting", f"sam2_hiera_t@256 random, 384px targets, {args.device}, feature cache off")
    )
    report(
        "Benchmark 4: peak memory grows not with the number of targets", rows, results, args.json
    )


if __name__ == "__main__":
    main()
