"""Benchmark 3: re-running after changing the prompts, with image features cached.

A person fixes a prompt and presses Run again: no image is encoded again, only
the references' decoding and the targets' memory attention + decoder run.
Goal: the re-run takes at most 25 % of the cold run.

    python benchmarks/bench_rerun.py [--targets 8 --classes 2] [--json out.json]
"""

from __future__ import annotations

import time

import napari_sansa as ns
from common import blob_mask, images, parser, random_model, report, sync


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--config", default="sam2_hiera_t", help="SAM2 size (sam2_hiera_t ... _l)")
    args = p.parse_args()
    model = random_model(args.config, device=args.device)
    shape = (args.size, args.size)
    imgs = images(1 + args.targets, shape, seed=100)

    def ref(shift):
        return ns.Reference(
            imgs[0],
            [
                ns.Mask(
                    blob_mask(
                        shape, (shape[0] * (0.25 + 0.2 * c) + shift, shape[1] / 2), shape[0] // 8
                    ),
                    label=c + 1,
                )
                for c in range(args.classes)
            ],
        )

    warm = images(2, shape, seed=999)  # warm-up on other images: the cache stays cold
    model.segment([ns.Reference(warm[0], ref(0).prompts)], warm[1:])
    sync(args.device)
    t0 = time.perf_counter()
    model.segment([ref(0)], imgs[1:])
    sync(args.device)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.segment([ref(shape[0] // 10)], imgs[1:])  # moved masks: new prompts
    sync(args.device)
    warm_t = time.perf_counter() - t0
    rows = [
        (
            "setting",
            (
                f"N={args.targets}, k=1, C={args.classes}, {args.size}px, "
                f"{args.config}@1024 random, {args.device}"
            ),
        ),
        ("cold run", f"{cold:.2f} s"),
        ("re-run, new prompts", f"{warm_t:.2f} s"),
        ("ratio", f"{100 * warm_t / cold:.1f} % (goal <= 25 %)"),
        ("cache", f"{model.feature_cache.hits} hits, {model.feature_cache.misses} misses"),
    ]
    report(
        "Benchmark 3: re-run after changing prompts",
        rows,
        {"cold_s": cold, "rerun_s": warm_t, "ratio": warm_t / cold},
        args.json,
    )


if __name__ == "__main__":
    main()
