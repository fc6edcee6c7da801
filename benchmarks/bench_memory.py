"""Benchmark 4: peak memory for 200 targets versus 20 (a stack is streamed).

Each count runs in a fresh process that loads the model (random weights, written
once beforehand), then streams the targets through ``segment_iter`` keeping only
what a batch job keeps (it writes results out). The resident memory is sampled
at every finished target; its maximum during the stream is the figure, next to
the process's overall peak. The in-memory feature cache is off, as in
``napari-sansa segment``; when it is on, it adds at most its budget
(``cache_bytes``, 1 GiB by default). Goal: peak(200) <= 1.2 x peak(20).

    python benchmarks/bench_memory.py [--json out.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from common import parser, report

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {bench!r})
from common import images, blob_mask
import napari_sansa as ns

def rss_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

model = ns.load_model(config="sam2_hiera_t", sam2_checkpoint={sam2!r}, adapter_checkpoint={ad!r},
                      image_size=256, device={device!r}, cache_bytes=0)
shape = (384, 384)
ref = ns.Reference(images(1, shape)[0], [ns.Mask(blob_mask(shape, (150, 200), 60))])
def frames():
    for i in range({n}):
        yield images(1, shape, seed=1000 + i)[0]
stream = 0.0
area = 0
for pred in model.segment_iter([ref], frames(), mode={mode!r}):
    area += int((pred.labels > 0).sum())  # "written out": nothing is kept
    stream = max(stream, rss_mib())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"stream_mib": stream, "peak_mib": peak}}))
"""


def measure(n, device, mode, sam2, ad):
    code = CHILD.format(
        bench=os.path.dirname(os.path.abspath(__file__)),
        n=n,
        device=device,
        mode=mode,
        sam2=str(sam2),
        ad=str(ad),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs=2, default=(20, 200))
    args = p.parse_args()
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    sam2, ad = write_random_checkpoints(tempfile.mkdtemp(), "sam2_hiera_t", image_size=256)
    small, large = args.counts
    results = {}
    rows = [
        ("setting", f"sam2_hiera_t@256 random, 384px targets, {args.device}, feature cache off")
    ]
    for mode in ("independent", "sequential"):
        a = measure(small, args.device, mode, sam2, ad)
        b = measure(large, args.device, mode, sam2, ad)
        ratio = b["stream_mib"] / a["stream_mib"]
        results[mode] = {"small": a, "large": b, "ratio": ratio}
        rows.append(
            (
                f"{mode}: max RSS while streaming {small} / {large}",
                f"{a['stream_mib']:.0f} / {b['stream_mib']:.0f} MiB = {ratio:.3f}x (goal <= 1.2x)",
            )
        )
        rows.append(
            (
                f"{mode}: process peak {small} / {large}",
                f"{a['peak_mib']:.0f} / {b['peak_mib']:.0f} MiB",
            )
        )
    report(
        "Benchmark 4: peak memory does not grow with the number of targets",
        rows,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()
