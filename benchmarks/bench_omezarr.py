"""OME-Zarr output benchmark: memory of `napari-sansa segment --format ome-zarr` with tiles,
16384 x 16384 against 4096 x 4096 (goal: peak <= 1.2x).

Each size runs in a fresh process that calls ``napari_sansa.cli.main(["segment",
target.tif, "--format", "ome-zarr", "--probabilities", "--tile-size", ...])`` on an
uncompressed gray uint8 TIFF (read window by window), with a thread sampling the
process's anonymous resident memory (``RssAnon``, the heap) every 10 ms; the figures are
its peak during the command and the process's overall peak (``VmHWM``, file pages
included). Both outputs are written by tiles: the labels store and the probability store
(2 classes, float32: 2 GiB at 16384 x 16384, never held).

By default (``--stand-in``) the model's predictions are a stand-in: the run loads the
model (SAM2 Hiera-tiny at 256 px, random weights) and decodes the reference as usual,
but each target is "predicted" by reading each tile's window from the TIFF (as the model
does) and giving it random low-resolution logits of the size the real model keeps per
tile and class (64 x 64 at 256 px), stitched as a real tiled result
(``StitchedLogits``). On this 2-core machine the real model would take about an hour at
16384 x 16384 (324 tiles); everything after the model (the stitching, fusing, both
stores, the pyramids, the records and scores.csv) is the real code. ``--model`` runs the
real model instead (use smaller sizes, e.g. ``--sizes 2048 4096``).

    python benchmarks/bench_omezarr.py [--sizes 4096 16384] [--tile-size 1024] [--halo 64]
        [--model] [--json out.json]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench_tiles import write_reference

from common import cli_peak, parser, report

STAND_IN = r"""
import numpy as np
import napari_sansa.dataset.writing as writing
from napari_sansa.core.results import Prediction
from napari_sansa.core.tiling import StitchedLogits

def stand_in(model, memory, frames, run):
    spec = run.segment.tiles
    for i, img in enumerate(frames):
        hw = tuple(img.shape[:2])
        grid = spec.grid(hw)
        rng = np.random.default_rng(i)
        per_class = {c: [] for c in memory.classes}
        for t in grid:
            mean = float(np.asarray(img[t.rows, t.cols]).mean())  # the window is read
            for c in per_class:
                low = rng.standard_normal((64, 64)).astype(np.float32) * 4 + mean / 64 - 2
                per_class[c].append(low)
        yield Prediction(i, StitchedLogits(grid, hw, per_class), dict.fromkeys(per_class, 0.5),
                         run.segment.threshold)

writing.predictions = stand_in
"""


def write_target(path: Path, side: int, block: int = 1024) -> None:
    """A smooth random gray uint8 TIFF of ``side`` x ``side`` (uncompressed), block by block."""
    import tifffile

    from common import images

    mm = tifffile.memmap(path, shape=(side, side), dtype="uint8", photometric="minisblack")
    for k, r in enumerate(range(0, side, block)):
        row = images(1, (block, block), seed=k)[0][..., 0]
        for c in range(0, side, block):
            mm[r : r + block, c : c + block] = row
    mm.flush()
    del mm


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(side: int, folder: Path, args, sam2, ad) -> dict:
    from napari_sansa.core.tiling import tile_grid

    path = folder / f"target-{side}.tif"
    if not path.exists():
        write_target(path, side)
    ref, labels = write_reference(folder, args.tile_size)
    out = folder / f"out-{side}"
    argv = [
        "segment", str(path), "-r", str(ref), str(labels), "--out", str(out),
        "--format", "ome-zarr", "--probabilities",
        "--tile-size", str(args.tile_size), "--halo", str(args.halo), "--sam2-checkpoint",
        str(sam2), "--adapter-checkpoint", str(ad), "--image-size", "256", "--device",
        args.device, "--quiet", "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = cli_peak(argv, before="" if args.model else STAND_IN, env=env)
    result["tiles"] = len(tile_grid((side, side), args.tile_size, args.halo))
    result["labels_mib"] = _size(out / f"target-{side}.ome.zarr") / 2**20
    result["probabilities_mib"] = _size(out / f"target-{side}_probabilities.ome.zarr") / 2**20
    levels = json.loads((out / f"target-{side}.ome.zarr" / "sansa" / ".zattrs").read_text())
    result["levels"] = len(levels["multiscales"][0]["datasets"])
    if not args.keep:
        import shutil

        shutil.rmtree(out)
        path.unlink()
    return result


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=(4096, 16384))
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--halo", type=int, default=64)
    p.add_argument("--model", action="store_true", help="the real model instead of a stand-in")
    p.add_argument("--keep", action="store_true", help="keep the targets and outputs")
    args = p.parse_args()
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    folder = Path(tempfile.mkdtemp(prefix="sansa-omezarr-"))
    sam2, ad = write_random_checkpoints(folder, "sam2_hiera_t", image_size=256)
    small, large = args.sizes
    a = measure(small, folder, args, sam2, ad)
    b = measure(large, folder, args, sam2, ad)
    ratio = b["anon_peak_mib"] / a["anon_peak_mib"]
    hwm = b["hwm_mib"] / a["hwm_mib"]
    rows = [
        (
            "setting",
            f"sam2_hiera_t@256 random, tile_size={args.tile_size}, halo={args.halo}, "
            f"{args.device}, napari-sansa segment --format ome-zarr --probabilities, "
            + ("the real model" if args.model else "a stand-in predictor (see the module)"),
        ),
        (f"tiles {small} / {large}", f"{a['tiles']} / {b['tiles']}"),
        (
            f"anon memory peak {small} / {large}",
            (
                f"{a['anon_peak_mib']:.0f} / {b['anon_peak_mib']:.0f} MiB = {ratio:.3f}x "
                "(goal <= 1.2x)"
            ),
        ),
        (
            f"process peak (VmHWM) {small} / {large}",
            f"{a['hwm_mib']:.0f} / {b['hwm_mib']:.0f} MiB = {hwm:.3f}x",
        ),
        (f"time {small} / {large}", f"{a['seconds']:.1f} / {b['seconds']:.1f} s"),
        (
            f"stores {small} / {large} (labels, probabilities)",
            (
                f"{a['labels_mib']:.1f} + {a['probabilities_mib']:.0f} / "
                f"{b['labels_mib']:.1f} + {b['probabilities_mib']:.0f} MiB, "
                f"{a['levels']} / {b['levels']} levels"
            ),
        ),
    ]
    report(
        "OME-Zarr outputs by tiles: memory bounded by the tile, not the image",
        rows,
        {"small": a, "large": b, "memory_ratio": ratio, "hwm_ratio": hwm},
        args.json,
    )


if __name__ == "__main__":
    main()
