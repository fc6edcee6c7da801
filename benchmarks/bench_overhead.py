"""Benchmark 2: total time versus the model passes that cannot be avoided, in one run.

During one ``model.segment`` call, the encoder passes (each image once), the
reference decoding and memory encoding, and the memory-attention + decoder passes
of the targets are timed where they happen. Everything else (reading and
converting images, resizing, moving results to the CPU, upsampling, Python) is
overhead. Goal: overhead under 15 % of the unavoidable passes.

    python benchmarks/bench_overhead.py [--targets 8 --classes 2 --size 1024] [--json out.json]
"""

from __future__ import annotations

import time

import torch

import napari_sansa as ns
from common import blob_mask, images, parser, random_model, report, sync, timed


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--size", type=int, default=1024, help="image side in pixels")
    p.add_argument("--batch-size", type=int, default=None)
    args = p.parse_args()
    model = random_model(device=args.device, cache_bytes=0)
    shape = (args.size, args.size)
    imgs = images(1 + args.targets, shape)
    ref = ns.Reference(
        imgs[0],
        [
            ns.Mask(
                blob_mask(shape, (shape[0] * (0.25 + 0.2 * c), shape[1] / 2), shape[0] // 8),
                label=c + 1,
            )
            for c in range(args.classes)
        ],
    )
    model.segment([ref], imgs[1:2])  # warm-up
    parts: dict = {}
    eng = model.engine
    for name in (
        "encode",
        "decode_mask_prompt",
        "decode_sparse_prompt",
        "memory",
        "decode_with_memory",
    ):
        real = getattr(eng, name)

        def wrapped(*a, _real=real, _name=name, **k):
            with timed(parts, _name, args.device):
                return _real(*a, **k)

        setattr(eng, name, wrapped)
    sync(args.device)
    t0 = time.perf_counter()
    preds = model.segment([ref], imgs[1:], batch_size=args.batch_size)
    for p_ in preds:  # what a user reads: the fused labels
        _ = p_.labels
    sync(args.device)
    total = time.perf_counter() - t0
    needed = sum(parts.values())
    overhead = total / needed - 1
    rows = [
        (
            "setting",
            (
                f"N={args.targets}, C={args.classes}, {args.size}px, sam2_hiera_t@1024 random, "
                f"{args.device}, {model.dtype}"
            ),
        ),
        ("image encoder (each image once)", f"{parts.get('encode', 0):.2f} s"),
        (
            "references: decoder + memory",
            f"{parts.get('decode_mask_prompt', 0) + parts.get('memory', 0):.2f} s",
        ),
        ("targets: memory attention + decoder", f"{parts.get('decode_with_memory', 0):.2f} s"),
        ("total", f"{total:.2f} s"),
        ("overhead beyond those passes", f"{100 * overhead:.1f} % (goal < 15 %)"),
    ]
    report(
        "Benchmark 2: overhead beyond the unavoidable passes",
        rows,
        {"parts_s": parts, "total_s": total, "overhead": overhead},
        args.json,
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
