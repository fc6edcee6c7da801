"""Tiles benchmark: memory and time of a tiled target, 8192 x 8192 against 4096 x 4096.

Each target is an RGB uint8 TIFF on disk, opened as a memory map (``tifffile.memmap``),
so that only the tiles being encoded are read. Each size runs in a fresh process that
loads the model (random weights, written once beforehand, SAM2 Hiera-tiny at 256 px,
feature cache off as in ``napari-sansa segment``), prepares one reference, then
segments the target with ``tile_size``/``halo`` and writes its class map block by block
(``napari_sansa.write_labels``) into a memory-mapped ``.npy``. A thread samples the
process's anonymous resident memory (``RssAnon``: the heap, what the process itself
holds; the memory-mapped input and output pages are the page cache's and can be dropped)
every 10 ms; its maximum during the run is the figure, next to the process's overall
peak (``VmHWM``, file pages included). Goal: anon peak(8192) <= 1.2 x anon peak(4096),
and time growing with the number of tiles.

``--cli`` measures the command line instead: each size's process runs ``napari-sansa
segment target.tif --tile-size ... --halo ...`` (``napari_sansa.cli.main``, the
uncompressed TIFF read window by window, the labels written block by block as a tiled
TIFF); the figures are the same two peaks of that process. ``--cli --large-reference``:
the reference is as large as the target (the target's TIFF itself, read window by window
like it, only its tiles with prompts; its label image a PNG of that size, read whole).

``--cli --omezarr``: the target is an OME-Zarr (NGFF 0.5, ``CYX`` of 3 uint8 channels in
1024 x 1024 chunks, written chunk by chunk) labelled with ``--channels 0,1,2``, read window
by window through zarr.

    python benchmarks/bench_tiles.py [--tile-size 1024] [--halo 64]
        [--cli [--large-reference | --omezarr]] [--json out.json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import BENCH_DIR, SAMPLER, child_json, cli_peak, parser, report

CHILD = (
    SAMPLER
    + r"""
import numpy as np, tifffile
from common import images, blob_mask
import napari_sansa as ns

model = ns.load_model(config="sam2_hiera_t", sam2_checkpoint={sam2!r}, adapter_checkpoint={ad!r},
                      image_size=256, device={device!r}, cache_bytes=0)
shape = ({tile}, {tile})
ref = ns.Reference(images(1, shape, seed=99)[0], [ns.Mask(blob_mask(shape, (300, 400), 150))])
memory = model.prepare_references([ref])
target = tifffile.memmap({path!r})
out = np.lib.format.open_memmap({out!r}, "w+", np.uint8, target.shape[:2])
base = status("RssAnon")
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
for pred in model.segment_iter(memory, [target], tile_size={tile}, halo={halo}):
    ns.write_labels(pred, out)
    tiles = len(pred.logits.grid)
seconds = time.perf_counter() - t0
running = False
thread.join()
out.flush()
print(json.dumps({{"anon_peak_mib": peak["anon"], "anon_before_mib": base, "tiles": tiles,
                  "seconds": seconds, "hwm_mib": status("VmHWM"),
                  "foreground": float((out > 0).mean())}}))
"""
)


def write_reference(folder: Path, side: int, image="ref.png", labels="ref_labels.png"):
    """A reference image of ``side`` x ``side`` and its label image (one blob), as PNG
    files (``image=None``: only the label image)."""
    import imageio.v3 as iio

    from common import blob_mask, images

    labels = folder / labels
    if image is not None:
        image = folder / image
        iio.imwrite(image, images(1, (side, side), seed=99)[0])
    iio.imwrite(labels, blob_mask((side, side), (300, 400), 150).astype("uint8"))
    return image, labels


def measure_cli(side, folder: Path, args, sam2, ad) -> dict:
    from napari_sansa.core.tiling import tile_grid

    path = folder / f"target-{side}.{'ome.zarr' if args.omezarr else 'tif'}"
    if not path.exists():
        (write_omezarr if args.omezarr else write_target)(path, side)
    if args.large_reference:  # the target's TIFF, its labels a PNG of the target's size
        ref, labels = path, folder / f"ref-labels-{side}.png"
        write_reference(folder, side, image=None, labels=labels)
    else:
        ref, labels = write_reference(folder, args.tile_size)
    argv = [
        "segment", str(path), "-r", str(ref), str(labels), "--out", str(folder / f"cli-{side}"),
        "--tile-size", str(args.tile_size), "--halo", str(args.halo), "--sam2-checkpoint",
        str(sam2), "--adapter-checkpoint", str(ad), "--image-size", "256", "--device",
        args.device, "--quiet", "--overwrite", *(["--channels", "0,1,2"] if args.omezarr else []),
    ]  # fmt: skip
    result = cli_peak(argv)
    result["tiles"] = len(tile_grid((side, side), args.tile_size, args.halo))
    return result


def write_target(path: Path, side: int, block: int = 1024) -> None:
    """A smooth random RGB uint8 TIFF of ``side`` x ``side``, written block by block."""
    import tifffile

    from common import images

    mm = tifffile.memmap(path, shape=(side, side, 3), dtype="uint8", photometric="rgb")
    k = 0
    for r in range(0, side, block):
        for c in range(0, side, block):
            mm[r : r + block, c : c + block] = images(1, (block, block), seed=k)[0]
            k += 1
    mm.flush()
    del mm


def write_omezarr(path: Path, side: int, block: int = 1024) -> None:
    """The image of :func:`write_target` as an OME-Zarr (NGFF 0.5): ``CYX``, 3 uint8
    channels in ``block`` x ``block`` chunks, written chunk by chunk."""
    import zarr

    from common import images

    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"
    ]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
    }
    arr = group.create_array("0", shape=(3, side, side), chunks=(1, block, block), dtype="uint8")
    k = 0
    for r in range(0, side, block):
        for c in range(0, side, block):
            tile = images(1, (block, block), seed=k)[0]
            arr[:, r : r + block, c : c + block] = tile.transpose(2, 0, 1)
            k += 1


def measure(side, folder: Path, args, sam2, ad) -> dict:
    path = folder / f"target-{side}.tif"
    if not path.exists():
        write_target(path, side)
    code = CHILD.format(
        bench=BENCH_DIR,
        sam2=str(sam2),
        ad=str(ad),
        device=args.device,
        tile=args.tile_size,
        halo=args.halo,
        path=str(path),
        out=str(folder / f"labels-{side}.npy"),
    )
    return child_json(code)


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=(4096, 8192))
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--halo", type=int, default=64)
    p.add_argument("--cli", action="store_true", help="measure `napari-sansa segment` instead")
    p.add_argument(
        "--large-reference",
        action="store_true",
        help="with --cli: a reference as large as the target (a TIFF read by windows)",
    )
    p.add_argument(
        "--omezarr",
        action="store_true",
        help="with --cli: the target an OME-Zarr (3 channels) read window by window",
    )
    args = p.parse_args()
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    folder = Path(tempfile.mkdtemp(prefix="sansa-tiles-"))
    sam2, ad = write_random_checkpoints(folder, "sam2_hiera_t", image_size=256)
    small, large = args.sizes
    run = measure_cli if args.cli else measure
    a = run(small, folder, args, sam2, ad)
    b = run(large, folder, args, sam2, ad)
    ratio = b["anon_peak_mib"] / a["anon_peak_mib"]
    time_ratio = b["seconds"] / a["seconds"]
    tile_ratio = b["tiles"] / a["tiles"]
    rows = [
        (
            "setting",
            f"sam2_hiera_t@256 random, tile_size={args.tile_size}, halo={args.halo}, "
            f"{args.device}, "
            + (
                "napari-sansa segment: "
                + ("OME-Zarr (CYX, 3 channels)" if args.omezarr else "uncompressed TIFF")
                + " read by windows, tiled TIFF labels out"
                + (", the reference as large as the target" if args.large_reference else "")
                if args.cli
                else "memory-mapped TIFF in, memory-mapped labels out"
            ),
        ),
        (f"tiles {small} / {large}", f"{a['tiles']} / {b['tiles']} = {tile_ratio:.2f}x"),
        (
            f"anon memory peak {small} / {large}",
            (
                f"{a['anon_peak_mib']:.0f} / {b['anon_peak_mib']:.0f} MiB = {ratio:.3f}x "
                "(goal <= 1.2x)"
            ),
        ),
        (
            f"anon memory before the target {small} / {large}",
            f"{a['anon_before_mib']:.0f} / {b['anon_before_mib']:.0f} MiB",
        ),
        (
            f"process peak incl. file pages {small} / {large}",
            f"{a['hwm_mib']:.0f} / {b['hwm_mib']:.0f} MiB",
        ),
        (
            f"time {small} / {large}",
            (
                f"{a['seconds']:.1f} / {b['seconds']:.1f} s = {time_ratio:.2f}x "
                f"({a['seconds'] / a['tiles']:.2f} / {b['seconds'] / b['tiles']:.2f} s per tile)"
            ),
        ),
    ]
    report(
        "Tiles benchmark: a tiled target's memory is bounded by the tile, its time by the tiles",
        rows,
        {"small": a, "large": b, "memory_ratio": ratio, "time_ratio": time_ratio},
        args.json,
    )


if __name__ == "__main__":
    main()
