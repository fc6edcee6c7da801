"""Painting on the track labels: how long the tracks take to follow one stroke, on a short
and on a long time-lapse (napari's ``ViewerModel``, no Qt).

A time-lapse of ``--cells`` disks moving through ``T`` frames of 256 x 256 is linked
(the core's ``track_objects``) into "[sansa track labels]"; then a brush stroke
(``layer.paint``, napari's brush, 11 px) is painted on one frame, 20 times, each
followed by napari's undo. Printed: the median time of a stroke (napari's own paint and
the tracks following it: the frame measured again, the table, the Tracks layer, the
features) and of an undo, for 20 and 400 frames side by side, and the same stroke
with the tracks not listening (napari's paint alone). Only the frames a stroke touched are
measured again, so the time should not grow with the frames but for the table and the
Tracks layer, which hold every frame's rows.

    python benchmarks/bench_track_paint.py [--cells 30] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def time_lapse(frames: int, cells: int, size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.uniform(20, size - 20, (cells, 2))
    step = rng.normal(0, 1.0, (cells, 2))
    rr, cc = np.indices((size, size))
    out = np.zeros((frames, size, size), np.uint16)
    for t in range(frames):
        pos = np.clip(start + step * t, 8, size - 8)
        for i, (r, c) in enumerate(pos):
            out[t][(rr - r) ** 2 + (cc - c) ** 2 <= 36] = i + 1 + t % 3
    return out


def measure(frames: int, cells: int, repeats: int) -> dict:
    from napari.components import ViewerModel

    from napari_sansa.napari.tracks_output import TrackSettings, TracksOutput, link_tracks

    objects = time_lapse(frames, cells)
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros(objects.shape, np.uint8), name="cells")
    out = TracksOutput(viewer, image, TrackSettings())
    out.show(*link_tracks(objects, None, TrackSettings()))
    labels = out.labels
    labels.brush_size = 11
    t = frames // 2
    stroke, undo = [], []
    for k in range(repeats):
        a = time.perf_counter()
        labels.paint((t, 128, 20 + 8 * (k % 20)), 999)
        b = time.perf_counter()
        labels.undo()
        c = time.perf_counter()
        stroke.append(b - a)
        undo.append(c - b)
    assert len(out.table["track"]) > 0
    rows = len(out.table["track"])
    # napari alone: the same strokes on a plain Labels layer of the same data
    plain = viewer.add_labels(np.array(labels.data), name="plain")
    plain.brush_size = 11
    alone = []
    for k in range(repeats):
        a = time.perf_counter()
        plain.paint((t, 128, 20 + 8 * (k % 20)), 999)
        alone.append(time.perf_counter() - a)
        plain.undo()
    viewer.close() if hasattr(viewer, "close") else None
    return {
        "frames": frames,
        "rows": rows,
        "stroke_ms": 1000 * statistics.median(stroke),
        "undo_ms": 1000 * statistics.median(undo),
        "napari_alone_ms": 1000 * statistics.median(alone),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{'frames':>6} {'rows':>6} {'stroke ms':>10} {'undo ms':>8} {'napari alone ms':>16}")
    for frames in (20, 400):
        r = measure(frames, args.cells, args.repeats)
        print(f"{r['frames']:>6} {r['rows']:>6} {r['stroke_ms']:>10.1f} {r['undo_ms']:>8.1f} "
              f"{r['napari_alone_ms']:>16.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
