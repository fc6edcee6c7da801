"""Synthetic time-lapses of moving, touching and dividing cells with known tracks.

Shared by tests/core/test_tracks.py and benchmarks/bench_tracks.py. Cells are disks that
move with a persistent random velocity, push each other apart so that they touch but
never cover one another (a pixel in two disks goes to the nearer centre, relative to the
radii), stay in the field, grow, and divide: a parent of radius ``R`` ends and two
daughters of radius ``R / sqrt(2)`` start half a radius either side of its centre.
"""

from __future__ import annotations

import numpy as np


def time_lapse(
    seed: int = 0,
    n_frames: int = 30,
    size: int = 128,
    n_cells: int = 8,
    radius: float = 7.0,
    speed: float = 1.5,
    divide: float = 0.03,
    max_cells: int = 40,
):
    """``(truth, lines)``: ``(T, size, size)`` ground-truth track ids (uint16) and the
    Cell Tracking Challenge lines ``L B E P`` of every track (``(N, 4)`` int64)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((size, size), dtype=np.float32)
    cells = {}  # label -> [y, x, vy, vx, r, age]
    lines = {}  # label -> [B, E, P]
    next_label = 1
    for _ in range(n_cells):
        r = radius * rng.uniform(0.85, 1.15)
        y, x = rng.uniform(r + 2, size - r - 2, 2)
        v = rng.normal(0, speed, 2)
        cells[next_label] = [y, x, v[0], v[1], r, 0]
        lines[next_label] = [0, 0, 0]
        next_label += 1
    truth = np.zeros((n_frames, size, size), np.uint16)
    for t in range(n_frames):
        if t:
            for label in list(cells):
                y, x, vy, vx, r, age = cells[label]
                if age > 6 and len(cells) < max_cells and rng.random() < divide:
                    del cells[label]
                    lines[label][1] = t - 1
                    phi = rng.uniform(0, 2 * np.pi)
                    d = np.array([np.sin(phi), np.cos(phi)])
                    for s in (1, -1):
                        rd = r / np.sqrt(2)
                        v = s * d * speed + rng.normal(0, speed / 3, 2)
                        cells[next_label] = [y + s * d[0] * r / 2, x + s * d[1] * r / 2,
                                             v[0], v[1], rd, 0]  # fmt: skip
                        lines[next_label] = [t, t, label]
                        next_label += 1
                    continue
                vy, vx = 0.8 * np.array([vy, vx]) + rng.normal(0, speed * 0.4, 2)
                r = r + 0.1 * (radius - r)
                cells[label] = [y + vy, x + vx, vy, vx, r, age + 1]
            _separate(cells, size)
        truth[t] = _paint(cells, rows, cols)
        for label in cells:
            lines[label][1] = t
    # a disk pushed to nothing (never happens with these sizes) would break the lines
    out = np.array([[k, *v] for k, v in sorted(lines.items())], np.int64).reshape(-1, 4)
    present = {int(v) for v in np.unique(truth) if v}
    assert present == set(out[:, 0].tolist()), "a cell vanished from the synthetic frames"
    return truth, out


def _separate(cells, size, rounds: int = 20):
    labels = list(cells)
    for _ in range(rounds):
        moved = False
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                ca, cb = cells[a], cells[b]
                dy, dx = cb[0] - ca[0], cb[1] - ca[1]
                dist = np.hypot(dy, dx) or 1e-3
                need = 0.95 * (ca[4] + cb[4])
                if dist < need:
                    push = (need - dist) / 2 / dist
                    ca[0] -= dy * push
                    ca[1] -= dx * push
                    cb[0] += dy * push
                    cb[1] += dx * push
                    moved = True
        for c in cells.values():
            for k, vk in ((0, 2), (1, 3)):
                lo, hi = c[4] + 1, size - c[4] - 2
                if c[k] < lo or c[k] > hi:
                    c[k] = min(max(c[k], lo), hi)
                    c[vk] = -c[vk]
        if not moved:
            break


def _paint(cells, rows, cols) -> np.ndarray:
    best = np.full(rows.shape, np.inf, np.float32)
    out = np.zeros(rows.shape, np.uint16)
    for label, (y, x, _, _, r, _) in cells.items():
        d = np.hypot(rows - y, cols - x) / r
        take = (d < 1) & (d < best)
        best[take] = d[take]
        out[take] = label
    return out


def shuffled(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """The frames of ``truth`` with ids renumbered at random in each frame (ids unrelated
    from frame to frame, as per-frame objects are)."""
    rng = np.random.default_rng(seed + 1000)
    out = np.zeros_like(truth, dtype=np.uint16)
    for t, frame in enumerate(truth):
        ids = np.unique(frame)
        ids = ids[ids > 0]
        lookup = np.zeros(int(frame.max()) + 1, np.uint16)
        lookup[ids] = rng.permutation(len(ids)) + 1
        out[t] = lookup[frame]
    return out


def write_ctc_truth(folder, truth: np.ndarray, lines: np.ndarray) -> None:
    """The ground truth as a CTC ``TRA`` folder: ``man_track.txt`` and ``man_trackTTT.tif``."""
    import tifffile

    tra = folder / "TRA"
    tra.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(truth):
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", frame.astype(np.uint16))
    (tra / "man_track.txt").write_text("".join(f"{a} {b} {c} {d}\n" for a, b, c, d in lines))


def ctc_scores(res, gt, metrics=("TRA", "LNK", "DET")) -> dict:
    """CTC metrics (py-ctcmetrics) of the result folder ``res`` against ``gt``."""
    import contextlib
    import io

    from ctc_metrics.scripts.evaluate import calculate_metrics, load_data

    with contextlib.redirect_stdout(io.StringIO()):
        comp, ref, traj, segm, _, valid = load_data(str(res), str(gt), True, False, threads=1)
        return calculate_metrics(comp, ref, traj, segm, list(metrics), valid)
