"""3D objects benchmark: touching ellipsoids in anisotropic z-stacks, split in 3D.

Synthetic z-stacks of touching, randomly rotated ellipsoids with known instances
(``tests/core/synthetic_objects.py``: touching nuclei share a class, so the class map
alone cannot tell them apart), voxels 2, 3 or 4 times deeper than wide, of several
random seeds and shapes. From the ground-truth class map, three ways to get objects are
scored by the F1 of instances matched in 3D at IoU > 0.5, side by side on the same
stacks:

- ``split_objects`` on the (Z, Y, X) class map with the voxel size (the 3D split);
- per-plane splitting (napari-sansa's objects before 3D, ``--objects-per-plane``): each
  plane split on its own, ids unique per plane, matched in 3D as they are;
- plain 3D connected components (``split="none"``).

Goal: F1 >= 0.95 for the 3D split.

    python benchmarks/bench_objects3d.py [--seeds 12] [--json out.json]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from common import parser, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))
from synthetic_objects import matching_f1, touching_ellipsoids  # noqa: E402


def per_plane(classes) -> np.ndarray:
    """Today's objects per plane, ids made unique in the stack (plane ``z``'s follow
    plane ``z - 1``'s), as a run with ``--objects-per-plane`` writes them."""
    import napari_sansa as ns

    stack, _ = ns.stack_objects(
        [(o, ns.object_table(o, c)) for c, o in ((c, ns.split_objects(c)) for c in classes)]
    )
    return stack


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=12)
    args = p.parse_args()
    import napari_sansa as ns

    rng = np.random.default_rng(1234)
    f1_3d, f1_plane, f1_cc, times, sizes, counts = [], [], [], [], [], []
    for seed in range(args.seeds):
        z = (2.0, 3.0, 4.0)[seed % 3]
        side = int(rng.choice([96, 128, 160]))
        depth = int(rng.uniform(60, 96) / z)
        n = int(14 * (side / 96) ** 2 * depth * z / 72)
        truth, classes = touching_ellipsoids(
            seed, shape=(depth, side, side), n=n, spacing=(z, 1.0, 1.0)
        )
        t0 = time.perf_counter()
        objects = ns.split_objects(classes, spacing=(z, 1.0, 1.0), min_size=0)
        times.append(time.perf_counter() - t0)
        f1_3d.append(matching_f1(truth, objects))
        f1_plane.append(matching_f1(truth, per_plane(classes)))
        f1_cc.append(matching_f1(truth, ns.split_objects(classes, split="none", min_size=0)))
        sizes.append(f"{depth}x{side}x{side} z{z:g}")
        counts.append(int(len(np.unique(truth)) - 1))

    def line(values):
        return f"mean {np.mean(values):.3f}, min {np.min(values):.3f}"

    rows = [
        ("stacks", f"{args.seeds}: {', '.join(sizes)}"),
        ("nuclei per stack", f"{np.mean(counts):.1f} (min {min(counts)}, max {max(counts)})"),
        ("F1 at IoU 0.5: 3D split", f"{line(f1_3d)} (goal >= 0.95)"),
        ("F1 at IoU 0.5: per-plane split", line(f1_plane)),
        ("F1 at IoU 0.5: 3D connected components", line(f1_cc)),
        ("time of the 3D split per stack", f"{np.mean(times) * 1000:.0f} ms"),
    ]
    report(
        "3D objects benchmark: touching ellipsoids, anisotropic voxels",
        rows,
        {
            "stacks": sizes,
            "f1_3d_split": f1_3d,
            "f1_per_plane": f1_plane,
            "f1_connected_components_3d": f1_cc,
            "seconds_3d_split": times,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
