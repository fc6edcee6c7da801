"""Benchmark 3: re-running after changing the prompts, with image features cached.

A person fixes a prompt and presses Run again: no image is encoded again, and only
the classes whose prompts changed are decoded again, in the references (the other
classes' reference memory is reused) and in the targets (the other classes'
results are reused). Two re-runs are timed against the cold run: every class's
prompts changed, and one class's. Goal: the one-class re-run takes at most 25 %
of the cold run.

    python benchmarks/bench_rerun.py [--targets 4 --classes 3 --references 2 --prompt box]
                                     [--json out.json]
"""

from __future__ import annotations

import time

import napari_sansa as ns
from common import blob_mask, images, parser, random_model, report, sync


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--references", type=int, default=2)
    p.add_argument("--prompt", choices=("box", "mask"), default="box")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="runs per timing (the median is kept)")
    p.add_argument("--config", default="sam2_hiera_t", help="SAM2 size (sam2_hiera_t ... _l)")
    args = p.parse_args()
    model = random_model(args.config, device=args.device)
    shape = (args.size, args.size)
    h, w = shape
    k = args.references

    def prompt(c, dy):
        """Class ``c``'s object, moved down by ``dy`` pixels."""
        center, radius = (h * (0.25 + 0.2 * c) + dy, w / 2), h // 8
        if args.prompt == "mask":
            return ns.Mask(blob_mask(shape, center, radius), label=c + 1)
        r, q = center
        return ns.Box((r - radius, q - radius, r + radius, q + radius), label=c + 1)

    def refs(imgs, shifts):
        return [ns.Reference(im, [prompt(c, dy) for c, dy in enumerate(shifts)]) for im in imgs]

    def timed_run(imgs, shifts):
        sync(args.device)
        t0 = time.perf_counter()
        model.segment(refs(imgs[:k], shifts), imgs[k:])
        sync(args.device)
        return time.perf_counter() - t0

    step = shape[0] // 20
    colds, everys, ones = [], [], []
    warm = images(k + 1, shape, seed=999)  # warm-up on other images
    timed_run(warm, [0] * args.classes)
    for r in range(args.repeat):
        imgs = images(k + args.targets, shape, seed=100 + 50 * r)  # new images: caches cold
        colds.append(timed_run(imgs, [0] * args.classes))
        everys.append(timed_run(imgs, [step] * args.classes))  # every class's prompts moved
        ones.append(timed_run(imgs, [2 * step] + [step] * (args.classes - 1)))  # class 1's again

    def median(xs):
        return sorted(xs)[len(xs) // 2]

    cold, every, one = median(colds), median(everys), median(ones)
    setting = (
        f"N={args.targets}, k={k}, C={args.classes}, {args.prompt} prompts, {args.size}px, "
        f"{args.config}@1024 random, {args.device}, median of {args.repeat}"
    )
    rows = [
        ("setting", setting),
        ("cold run", f"{cold:.2f} s"),
        ("re-run, every class's prompts changed", f"{every:.2f} s"),
        ("  ratio", f"{100 * every / cold:.1f} %"),
        (f"re-run, one class of {args.classes} changed", f"{one:.2f} s"),
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
