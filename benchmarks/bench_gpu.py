"""Benchmark 5: images per second on an NVIDIA GPU, SANSA on SAM2 Hiera-Large at 1024 px.

1-shot, independent mode, bf16, random weights (speed does not depend on the
values). The authors report 15 images/s on an RTX 4090; the goal here is 150
images/s or more on an H100 (its compute bound is about 380 images/s for this
model, about 2.1 TFLOP per target).

    python benchmarks/bench_gpu.py [--targets 512 --precision bf16 --compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import napari_sansa as ns
from common import blob_mask, parser, report, sync
from napari_sansa.core.model import SansaModel
from napari_sansa.core.models.adapters import default_bottlenecks, inject_adapters
from napari_sansa.core.models.build import build_sam2
from napari_sansa.core.models.random_weights import randomize_


def main():
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(device="cuda")
    p.add_argument("--targets", type=int, default=512)
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--config", default="sam2_hiera_l", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        report(
            "Benchmark 5: GPU images/s",
            [("result", "skipped: no CUDA device on this machine")],
            {"skipped": True},
            args.json,
        )
        return
    # (--device cpu --config sam2_hiera_t --size 256 --targets 4: a smoke test of this script)
    sam = build_sam2(args.config, image_size=args.size)
    inject_adapters(sam, default_bottlenecks(sam.image_encoder.trunk, (2, 3), 0.8))
    randomize_(sam)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    if args.compile:
        for part in (sam.image_encoder, sam.memory_attention, sam.sam_mask_decoder):
            part.compile(dynamic=False)
    model = SansaModel(
        sam, config=args.config, device=torch.device(args.device), dtype=dtype, cache_bytes=0
    )
    rng = np.random.default_rng(0)
    frames = [(rng.random((1024, 1024, 3)) * 255).astype(np.uint8) for _ in range(16)]
    ref = ns.Reference(frames[0], [ns.Mask(blob_mask((1024, 1024), (400, 500), 150))])
    memory = model.prepare_references([ref], input_size=None)

    def targets(n):
        for i in range(n):
            yield frames[i % len(frames)]

    warm = targets(min(64, args.targets))
    for _ in model.segment_iter(memory, warm, batch_size=args.batch_size):  # warm-up
        pass
    sync(args.device)
    t0 = time.perf_counter()
    n = 0
    for _ in model.segment_iter(memory, targets(args.targets), batch_size=args.batch_size):
        n += 1
    sync(args.device)
    dt = time.perf_counter() - t0
    rows = [
        ("device", torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"),
        (
            "setting",
            (
                f"{args.config}@{args.size}, 1-shot, independent, {args.precision}, "
                f"batch {args.batch_size or 'auto'}, compile={args.compile}"
            ),
        ),
        ("targets", str(n)),
        ("images/s", f"{n / dt:.1f} (goal >= 150; authors: 15 on an RTX 4090)"),
        (
            "peak GPU memory",
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device != "cpu" else "-",
        ),
    ]
    report(
        "Benchmark 5: GPU images/s",
        rows,
        {
            "images_per_s": n / dt,
            "targets": n,
            "device": torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
