"""Tracks benchmark: linking objects through time, against a frame-by-frame overlap baseline.

Synthetic time-lapses of moving, touching and dividing cells with known tracks
(``tests/core/synthetic_tracks.py``; each frame's ids renumbered at random, as
per-frame objects are). Three linkers on the same perfect objects, scored by the Cell
Tracking Challenge measures of py-ctcmetrics (TRA, LNK, DET, identity switches IDSW,
division F1 BC(0)) on their CTC output (``ns.write_ctc``):

- ``track_objects`` (napari-sansa: max weight matching on overlap and centroid
  distance, divisions, gap closing);
- a frame-by-frame overlap baseline: an object continues the track of the object of the
  frame before it overlaps most, when that one overlaps it most too (no divisions, no
  gaps);
- laptrack 0.17 (``LapTrack`` on centroids with gap closing and splitting; optional, if
  installed), to choose the linker by measurement;
- ``track_objects`` with ``moved=`` the true motion: each object of frame ``t - 1``
  carried to where its cell is in frame ``t`` (a dividing cell onto both daughters), what
  SAM2's propagation (``ns.propagate_objects``) gives when it follows every cell right:
  the linker's ceiling with ``--follow`` / "follow with SAM2". (With random weights,
  SAM2's own carried masks mean nothing, so they are not scored here.)

Five settings: ``default`` (10 cells of about 14 px, moving about 1.2 px a frame),
``crowded`` (25 cells, most touching, 2 px a frame), ``fast`` (5 px a frame on average,
8 px for one cell in ten: overlaps shrink), ``faster`` (6.5 px, 11 px for one in ten)
and ``gaps`` (the default with 3 % of the objects missing from a frame, as a
segmentation misses them: gap closing). Goal: TRA >= 0.95 for ``track_objects``.

Memory: ``track_objects`` on a zarr time-lapse of 20 and of 200 frames (writing into a
zarr ``out=``), each in its own subprocess: the peak of Python's allocations
(tracemalloc, which sees NumPy's buffers) and the peak RSS while tracking (Linux's
VmHWM, reset after the imports through /proc/self/clear_refs). Goal: 200 frames <= 1.2 x
20 frames.

Cost of following with SAM2 (``--follow-cost``): on the tests' tiny model (Hiera-tiny at
256 px, random weights, CPU), the seconds ``ObjectPropagation`` takes per object and
frame, beside the seconds ``segment`` takes per target frame of one class, in one run.

    python benchmarks/bench_tracks.py [--seeds 5] [--frames 40] [--json out.json]
        [--follow-cost]
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import parser, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))
from synthetic_tracks import shuffled, time_lapse, write_ctc_truth  # noqa: E402

METRICS = ("TRA", "LNK", "DET", "MOTA", "BC")


def overlap_baseline(objects):
    """Frame-by-frame linking by mutual largest overlap: ``(tracks, table)``."""
    import napari_sansa as ns

    out = np.zeros(objects.shape, np.uint32)
    next_id = 1
    prev = None
    prev_track = {}
    cols = {k: [] for k in ("track", "t", "y", "x", "area", "parent")}
    for t in range(objects.shape[0]):
        cur = np.asarray(objects[t])
        ids = [int(i) for i in np.unique(cur) if i]
        track = {}
        if prev is not None:
            fg = (prev > 0) & (cur > 0)
            pairs, counts = np.unique(np.stack([prev[fg], cur[fg]]), axis=1, return_counts=True)
            best_of_prev, best_of_cur = {}, {}
            for (a, b), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
                if n > best_of_prev.get(a, (0, 0))[1]:
                    best_of_prev[a] = (b, n)
                if n > best_of_cur.get(b, (0, 0))[1]:
                    best_of_cur[b] = (a, n)
            for b, (a, _) in best_of_cur.items():
                if best_of_prev[a][0] == b:
                    track[b] = prev_track[a]
        for b in ids:
            if b not in track:
                track[b] = next_id
                next_id += 1
            mask = cur == b
            out[t][mask] = track[b]
            rr, cc = np.nonzero(mask)
            for k, v in zip(cols, (track[b], t, rr.mean(), cc.mean(), mask.sum(), 0), strict=True):
                cols[k].append(v)
        prev, prev_track = cur, track
    return out, ns.TrackTable({k: np.array(v) for k, v in cols.items()})


def laptrack_tracks(objects, max_distance):
    """laptrack's LAP on centroids, gap closing over one frame and splitting."""
    import pandas as pd
    from laptrack import LapTrack

    import napari_sansa as ns

    rows = []
    for t in range(objects.shape[0]):
        cur = np.asarray(objects[t])
        for i in np.unique(cur):
            if i:
                rr, cc = np.nonzero(cur == i)
                rows.append((t, int(i), rr.mean(), cc.mean(), len(rr)))
    df = pd.DataFrame(rows, columns=["frame", "label", "y", "x", "area"])
    cut = max_distance**2
    lt = LapTrack(cutoff=cut, gap_closing_cutoff=cut, gap_closing_max_frame_count=1,
                  splitting_cutoff=cut, merging_cutoff=False)  # fmt: skip
    track_df, split_df, _ = lt.predict_dataframe(df, ["y", "x"], only_coordinate_cols=False)
    track_df["track_id"] += 1
    parent = dict.fromkeys(track_df["track_id"].unique().tolist(), 0)
    for p, c in zip(split_df["parent_track_id"], split_df["child_track_id"], strict=True):
        parent[int(c) + 1] = int(p) + 1
    out = np.zeros(objects.shape, np.uint32)
    for t in range(objects.shape[0]):
        sub = track_df[track_df["frame"] == t]
        lookup = np.zeros(int(objects[t].max()) + 1, np.uint32)
        lookup[sub["label"].to_numpy()] = sub["track_id"].to_numpy()
        out[t] = lookup[objects[t]]
    cols = {
        "track": track_df["track_id"].to_numpy(),
        "t": track_df["frame"].to_numpy(),
        "y": track_df["y"].to_numpy(),
        "x": track_df["x"].to_numpy(),
        "area": track_df["area"].to_numpy(),
        "parent": np.array([parent[int(k)] for k in track_df["track_id"]]),
    }
    return out, ns.TrackTable(cols)


def drop(objects, share: float, seed: int):
    """``objects`` with ``share`` of the objects of the inner frames removed (0)."""
    if not share:
        return objects
    rng = np.random.default_rng(seed + 77)
    out = objects.copy()
    for t in range(1, len(out) - 1):
        ids = np.unique(out[t])
        gone = [i for i in ids if i and rng.random() < share]
        out[t][np.isin(out[t], gone)] = 0
    return out


def ctc_scores(res, gt) -> dict:
    from ctc_metrics.scripts.evaluate import calculate_metrics, load_data

    with contextlib.redirect_stdout(io.StringIO()):
        comp, ref, traj, segm, _, valid = load_data(str(res), str(gt), True, False, threads=1)
        s = calculate_metrics(comp, ref, traj, segm, list(METRICS), valid)
    return {"TRA": s["TRA"], "LNK": s["LNK"], "DET": s["DET"], "IDSW": int(s["IDSW"]),
            "BC(0)": s["BC(0)"], "valid": s.get("Valid", 1)}  # fmt: skip


MEMORY_CHILD = r"""
import json, sys, tracemalloc
import numpy as np, zarr
import napari_sansa as ns
src, dst = sys.argv[1], sys.argv[2]
objects = zarr.open_array(src, mode="r")
out = zarr.create_array(store=dst, shape=objects.shape, chunks=(1, *objects.shape[1:]),
                        dtype="u4", overwrite=True)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # VmHWM back to the present RSS
base = status("VmRSS")
tracemalloc.start()
tracks, table = ns.track_objects(objects, out=out)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
rss = status("VmHWM")
print(json.dumps({"tracemalloc_peak_mb": peak / 2**20, "rss_peak_mb": rss,
                  "rss_growth_mb": rss - base, "rows": len(table)}))
"""


def memory(frames_list, size: int) -> dict:
    import zarr

    truth, _ = time_lapse(7, n_frames=max(frames_list), size=size, n_cells=25, divide=0.0)
    objects = shuffled(truth, 7)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in frames_list:
            src = f"{tmp}/o{n}.zarr"
            z = zarr.create_array(store=src, shape=(n, size, size), chunks=(1, size, size),
                                  dtype="u2")  # fmt: skip
            z[:] = objects[:n]
            proc = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, src, f"{tmp}/t{n}.zarr"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def true_motion(truth, objects, lines):
    """``moved`` of a perfect propagation: frame ``t``'s pixels of each cell hold the id
    of that cell (or of its parent, for a daughter's first frame) in ``objects[t - 1]``."""
    parent = {int(line[0]): int(line[3]) for line in lines}
    moved = np.zeros_like(objects)
    for t in range(1, len(truth)):
        fg = objects[t - 1] > 0
        pairs = np.unique(np.stack([truth[t - 1][fg], objects[t - 1][fg]]), axis=1)
        was = {int(cell): int(oid) for cell, oid in pairs.T}
        cur = truth[t]
        for cell in np.unique(cur[cur > 0]):
            src = was.get(int(cell)) or was.get(parent.get(int(cell), 0))
            if src:
                moved[t][cur == cell] = src
    return moved


def follow_cost(n_objects: int = 24, frames: int = 4, size: int | None = None) -> dict:
    """Seconds per object and frame of SAM2's propagation, and per target frame of a
    one-class ``segment``, on the tiny random model at ``size`` px (None: the tests' 256;
    the memory attention and decoder are those of every SAM2 size), side by side."""
    import torch

    import napari_sansa as ns
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import CONFIG, SIZE, make_image

    torch.set_num_threads(1)
    size = size or SIZE
    with tempfile.TemporaryDirectory() as tmp:
        sam2, adapters = write_random_checkpoints(tmp, CONFIG, image_size=size, seed=0)
        model = ns.load_model(config=CONFIG, sam2_checkpoint=sam2, adapter_checkpoint=adapters,
                              device="cpu", image_size=size)  # fmt: skip
    images = [make_image(50 + t, shape=(128, 128)) for t in range(frames)]
    objects = np.zeros((frames, 128, 128), np.uint16)
    side = int(np.ceil(np.sqrt(n_objects)))
    for k in range(n_objects):
        r, c = divmod(k, side)
        objects[:, 4 + r * 20 : 16 + r * 20, 4 + c * 20 : 16 + c * 20] = k + 1
    ref = ns.Reference(images[0], [ns.Mask(objects[0] > 0, label=1)])
    t0 = time.perf_counter()
    model.segment([ref], images[1:], input_size=None)  # (its features stay in the cache)
    seg = (time.perf_counter() - t0) / (frames - 1)
    run = ns.ObjectPropagation(model, images, input_size=None)
    t0 = time.perf_counter()
    for _ in run.frames(objects):
        pass
    carry = (time.perf_counter() - t0) / ((frames - 1) * n_objects)
    return {"objects": n_objects, "frames": frames, "size": size, "segment_s_per_frame": seg,
            "follow_s_per_object_frame": carry, "encoded": run.encoded,
            "ratio": carry / seg}  # fmt: skip


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--memory-size", type=int, default=256)
    p.add_argument("--no-laptrack", action="store_true")
    p.add_argument("--follow-cost", action="store_true")
    p.add_argument("--follow-size", type=int, default=None, help="model input px (256)")
    p.add_argument("--follow-objects", type=int, default=24)
    p.add_argument("--follow-only", action="store_true", help="only the cost of following")
    args = p.parse_args()
    import napari_sansa as ns

    if args.follow_only:
        cost = follow_cost(args.follow_objects, size=args.follow_size)
        row = ("{follow_s_per_object_frame:.3f} s per object and frame; segment "
               "{segment_s_per_frame:.3f} s per frame (one class); ratio {ratio:.2f}; "
               "{encoded} image(s) encoded again").format(**cost)  # fmt: skip
        rows = [(f"follow with SAM2 (tiny, {cost['size']} px, CPU)", row)]
        report("Tracks: the cost of following with SAM2", rows, {"follow_cost": cost}, args.json)
        return

    try:
        import laptrack  # noqa: F401

        use_laptrack = not args.no_laptrack
    except ImportError:
        use_laptrack = False
    linkers = {"track_objects": None, "overlap baseline": None, "moved: true motion": None}
    if use_laptrack:
        linkers["laptrack"] = None
    settings = {  # (cells, speed, share of objects missing)
        "default": (10, 1.5, 0.0),
        "crowded": (25, 2.5, 0.0),
        "fast": (10, 6.0, 0.0),
        "faster": (10, 8.0, 0.0),
        "gaps": (10, 1.5, 0.03),
    }
    scores = {(s, k): [] for s in settings for k in linkers}
    seconds = {(s, k): 0.0 for s in settings for k in linkers}
    divisions = 0
    for setting, (cells, speed, missing) in settings.items():
        for seed in range(args.seeds):
            truth, lines = time_lapse(seed, n_frames=args.frames, size=args.size,
                                      n_cells=cells, speed=speed)  # fmt: skip
            divisions += int((lines[:, 3] > 0).sum() // 2)
            objects = drop(shuffled(truth, seed), missing, seed)
            diameter = 2 * 7.0
            with tempfile.TemporaryDirectory() as tmp:
                gt = Path(tmp) / "gt"
                write_ctc_truth(gt, truth, lines)
                for name in linkers:
                    t0 = time.perf_counter()
                    if name == "track_objects":
                        tracks, table = ns.track_objects(objects)
                    elif name == "moved: true motion":
                        moved = true_motion(truth, objects, lines)
                        t0 = time.perf_counter()  # the linking only
                        tracks, table = ns.track_objects(objects, moved=moved)
                    elif name == "overlap baseline":
                        tracks, table = overlap_baseline(objects)
                    else:
                        tracks, table = laptrack_tracks(objects, max_distance=diameter)
                    seconds[(setting, name)] += time.perf_counter() - t0
                    res = Path(tmp) / name.replace(" ", "_").replace(":", "")
                    ns.write_ctc(res, tracks, table)
                    scores[(setting, name)].append(ctc_scores(res, gt))
    rows, results = [], {"scores": {}, "seconds": {}}
    for (setting, name), per_seed in scores.items():
        mean = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
        worst_tra = min(s["TRA"] for s in per_seed)
        rows.append((
            f"{setting:7} {name:18}",
            "TRA {TRA:.4f} (worst {w:.4f})  LNK {LNK:.4f}  DET {DET:.4f}  IDSW {IDSW:.1f}  "
            "BC(0) {bc:.3f}  valid {valid:.0f}  {sec:.2f} s".format(
                **mean, w=worst_tra, bc=mean["BC(0)"], sec=seconds[(setting, name)]
            ),
        ))  # fmt: skip
        results["scores"][f"{setting}/{name}"] = per_seed
        results["seconds"][f"{setting}/{name}"] = seconds[(setting, name)]
    rows.append(("divisions (all settings and seeds)", divisions))
    if args.follow_cost:
        cost = follow_cost(args.follow_objects, size=args.follow_size)
        results["follow_cost"] = cost
        rows.append((f"follow with SAM2 (tiny, {cost['size']} px, CPU)",
                     "{follow_s_per_object_frame:.3f} s "
                     "per object and frame; segment {segment_s_per_frame:.3f} s per frame "
                     "(one class); ratio {ratio:.2f}; {encoded} image(s) encoded again"
                     .format(**cost)))  # fmt: skip
    mem = memory([20, 200], args.memory_size)
    results["memory"] = mem
    for n, m in mem.items():
        rows.append((f"memory {n} frames", "tracemalloc peak {tracemalloc_peak_mb:.1f} MB, RSS "
                     "peak {rss_peak_mb:.1f} MB (growth {rss_growth_mb:.1f} MB), {rows} rows"
                     .format(**m)))  # fmt: skip
    ratio_t = mem[200]["tracemalloc_peak_mb"] / mem[20]["tracemalloc_peak_mb"]
    ratio_r = mem[200]["rss_peak_mb"] / mem[20]["rss_peak_mb"]
    rows.append(("memory 200 / 20 frames", f"tracemalloc {ratio_t:.3f}, RSS {ratio_r:.3f}"))
    results["memory_ratio"] = {"tracemalloc": ratio_t, "rss": ratio_r}
    report("Tracks: CTC measures on synthetic time-lapses", rows, results, args.json)


if __name__ == "__main__":
    main()
