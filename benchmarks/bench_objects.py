"""Objects benchmark: splitting touching objects, against plain connected components.

Synthetic sets of touching disks (class 1) and ellipses (class 2) with known instances
(``tests/core/synthetic_objects.py``; touching objects share a class, so the class map
alone cannot tell them apart). From the ground-truth class map, ``split_objects``
(watershed on the distance transform, the default) and plain connected components
(``split="none"``) are scored by the F1 of instances matched at IoU > 0.5, side by side
on the same images; the object table is checked against scikit-image's ``regionprops``
and both are timed. Goal: F1 >= 0.95 for the split.

    python benchmarks/bench_objects.py [--seeds 10] [--size 512] [--json out.json]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from common import parser, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))
from synthetic_objects import matching_f1, touching_shapes  # noqa: E402


def table_matches_regionprops(objects, classes) -> bool:
    from skimage.measure import regionprops

    import napari_sansa as ns

    table = ns.object_table(objects, classes)
    props = regionprops(objects.astype(np.int64))
    return len(props) == len(table) and all(
        table["area"][i] == rp.area
        and np.allclose((table["centroid_row"][i], table["centroid_col"][i]), rp.centroid)
        and [table[f"bbox_{k}"][i] for k in ("min_row", "min_col", "max_row", "max_col")]
        == list(rp.bbox)
        for i, rp in enumerate(props)
    )


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    import napari_sansa as ns

    side = args.size
    n = int(40 * (side / 256) ** 2)
    f1_split, f1_plain, t_split, t_table, agree, counts = [], [], [], [], [], []
    for seed in range(args.seeds):
        truth, classes = touching_shapes(seed, shape=(side, side), n=n)
        t0 = time.perf_counter()
        objects = ns.split_objects(classes, min_size=0)
        t_split.append(time.perf_counter() - t0)
        plain = ns.split_objects(classes, min_size=0, split="none")
        f1_split.append(matching_f1(truth, objects))
        f1_plain.append(matching_f1(truth, plain))
        t0 = time.perf_counter()
        ns.object_table(objects, classes)
        t_table.append(time.perf_counter() - t0)
        agree.append(table_matches_regionprops(objects, classes))
        counts.append(int(truth.max()))
    rows = [
        ("set", f"{args.seeds} images of {side}x{side}, {np.mean(counts):.0f} objects each"),
        (
            "F1 at IoU 0.5: split_objects",
            f"mean {np.mean(f1_split):.3f}, min {np.min(f1_split):.3f} (goal >= 0.95)",
        ),
        (
            "F1 at IoU 0.5: connected components",
            f"mean {np.mean(f1_plain):.3f}, min {np.min(f1_plain):.3f}",
        ),
        ("object table = regionprops", f"{sum(agree)} of {len(agree)} images"),
        (
            "time per image",
            f"split {np.mean(t_split) * 1000:.0f} ms, table {np.mean(t_table) * 1000:.0f} ms",
        ),
    ]
    report(
        "Objects benchmark: touching objects split, against connected components",
        rows,
        {
            "f1_split": f1_split,
            "f1_connected_components": f1_plain,
            "table_matches_regionprops": agree,
            "seconds_split": t_split,
            "seconds_table": t_table,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
