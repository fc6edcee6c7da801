"""Benchmark 3: re-running after changing the prompts, with image features cached.

A person fixes a prompt and presses Run again: no image is encoded again, only
the references' decoding and the targets' memory attention + decoder run, and
only for the classes whose prompts changed (the others' results are reused).
Two re-runs are timed: every class's prompts changed, and one class's.
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

    def ref(shifts):
        """One mask per class; class ``c``'s moved down by ``shifts[c]`` pixels."""
        h, w = shape
        return ns.Reference(
            imgs[0],
            [
                ns.Mask(
                    blob_mask(shape, (h * (0.25 + 0.2 * c) + dy, w / 2), h // 8),
                    label=c + 1,
                )
                for c, dy in enumerate(shifts)
            ],
        )

    def timed_run(shifts):
        sync(args.device)
        t0 = time.perf_counter()
        model.segment([ref(shifts)], imgs[1:])
        sync(args.device)
        return time.perf_counter() - t0

    step = shape[0] // 10
    warm = images(2, shape, seed=999)  # warm-up on other images: the caches stay cold
    model.segment([ns.Reference(warm[0], ref([0] * args.classes).prompts)], warm[1:])
    cold = timed_run([0] * args.classes)
    every = timed_run([step] * args.classes)  # every class's mask moved: new prompts
    one = timed_run([2 * step] + [step] * (args.classes - 1))  # only class 1's moved again
    setting = (
        f"N={args.targets}, k=1, C={args.classes}, {args.size}px, "
        f"{args.config}@1024 random, {args.device}"
    )
    rows = [
        ("setting", setting),
        ("cold run", f"{cold:.2f} s"),
        ("re-run, every class's prompts changed", f"{every:.2f} s"),
        ("  ratio", f"{100 * every / cold:.1f} % (goal <= 25 %)"),
        ("re-run, one class's prompts changed", f"{one:.2f} s"),
        ("  ratio", f"{100 * one / cold:.1f} % (goal <= 25 %)"),
        ("feature cache", f"{model.feature_cache.hits} hits, {model.feature_cache.misses} misses"),
        ("result cache", f"{model.result_cache.hits} hits, {model.result_cache.misses} misses"),
    ]
    report(
        "Benchmark 3: re-run after changing prompts",
        rows,
        {
            "cold_s": cold,
            "rerun_all_classes_s": every,
            "rerun_one_class_s": one,
            "ratio_all_classes": every / cold,
            "ratio_one_class": one / cold,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
