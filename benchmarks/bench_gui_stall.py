"""How long does napari freeze while the SANSA widget runs?

A 10 ms QTimer ticks on napari's main thread; the longest gap between two ticks
during a run is the longest time the viewer could not redraw or react to the
mouse. The widget runs on a small SANSA with random weights (SAM2 Hiera-tiny at
256 px, written to a temporary folder; no download), on a stack of random smooth
frames with one painted reference frame, in a shown napari window.

Two runs are measured: "cold" (the first run: torch, sam2 and the model are
loaded inside the worker, the output layer is made) and "warm" (the model is
kept, the output layer updated). Also printed: how long the ``run()`` call
itself takes on the main thread (reading the layers, making the output layer),
the longest main-thread handling of one finished frame, and the same job
through the core inline (no GUI, no thread) for comparison.

    xvfb-run -a .venv/bin/python benchmarks/bench_gui_stall.py [--frames 16] [--size 256]

Without a DISPLAY it re-executes itself under ``xvfb-run -a``. Goal: the longest
stall stays under 0.2 s. This is a benchmark, not a test: it prints, it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

CONFIG = "sam2_hiera_t"
MODEL_SIZE = 256


def _ensure_display() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no DISPLAY and no xvfb-run: run this under a display or Xvfb")
    os.execv(xvfb, [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv])


def _frames(n: int, size: int):
    import numpy as np
    from skimage.filters import gaussian

    r = np.random.default_rng(0)
    stack = gaussian(r.random((n, size, size)), sigma=(0, 6, 6))
    stack = (stack - stack.min()) / (stack.max() - stack.min())
    return (stack * 255).astype(np.uint8)


class StallMeter:
    """Times between the ticks of a 10 ms QTimer on the main thread."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self):
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    def gaps(self):
        return [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)]


def _run_and_wait(widget):
    """Start a run and spin napari's event loop until it has finished."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: widget.worker is None and loop.quit())
    t0 = time.perf_counter()
    worker = widget.run()
    start = time.perf_counter() - t0
    if worker is None:
        raise SystemExit(f"the widget refused to run: {widget.status.value}")
    poll.start()
    loop.exec()
    poll.stop()
    return time.perf_counter() - t0, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    args = parser.parse_args()
    _ensure_display()

    import numpy as np

    folder = tempfile.mkdtemp(prefix="sansa-bench-")
    # in a child process, so that the first run imports torch itself, as in real use
    code = (
        "import sys; "
        "from napari_sansa.core.models.random_weights import write_random_checkpoints as w; "
        f"print(*w(sys.argv[1], {CONFIG!r}, image_size={MODEL_SIZE}, seed=0), sep='\\n')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, folder], check=True, capture_output=True, text=True
    )
    sam2, adapters = out.stdout.split()
    os.environ.update(
        NAPARI_SANSA_CONFIG=CONFIG,
        NAPARI_SANSA_SAM2_CHECKPOINT=str(sam2),
        NAPARI_SANSA_ADAPTER_CHECKPOINT=str(adapters),
        NAPARI_SANSA_IMAGE_SIZE=str(MODEL_SIZE),
    )
    torch_before = "torch" in sys.modules

    from qtpy.QtWidgets import QApplication

    import napari
    from napari_sansa.napari._qt.widget import SansaWidget

    stack = _frames(args.frames, args.size)
    paint = np.zeros(stack.shape, np.uint8)
    s = args.size
    paint[0, s // 4 : s // 2, s // 4 : s // 2] = 1

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.add_image(stack, name="frames")
    viewer.add_labels(paint, name="paint")
    widget = SansaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SANSA")
    widget.model_panel.device.value = "cpu"
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    # The widget imports torch and the engine on a background thread as soon as it
    # opens, while a person marks the references; wait for that as a person would.
    warmup = time.perf_counter()
    while widget.warmup is not None and widget.warmup.is_alive():
        app.processEvents()
        time.sleep(0.01)
    warmup = time.perf_counter() - warmup

    # time the widget's own main-thread work per finished frame (writing the output
    # layer, refreshing it, the table): the part of a stall the widget is responsible for;
    # the session connects its handler when a run starts, so wrapping it here times it
    handler_times: list[float] = []
    session = widget.session
    on_yielded = session._on_yielded

    def timed(result):
        t = time.perf_counter()
        on_yielded(result)
        handler_times.append(time.perf_counter() - t)

    session._on_yielded = timed

    results = []
    for label in ("cold", "warm"):
        handler_times.clear()
        if label == "warm":  # features cached, but every frame decoded again (new prompts)
            session.models.get(widget.model_panel.settings()).result_cache.clear()
        with StallMeter() as meter:
            total, start = _run_and_wait(widget)
        gaps = meter.gaps()
        if os.environ.get("SANSA_STALL_DEBUG"):
            big = sorted(
                ((g, meter.ticks[i] - meter.ticks[0]) for i, g in enumerate(gaps)), reverse=True
            )[:5]
            print(label, "largest gaps (s, at s):", [(round(g, 3), round(t, 2)) for g, t in big])
        p99 = float(np.percentile(gaps, 99))
        results.append((label, total, max(gaps), p99, len(gaps), start, max(handler_times)))
        if not widget.status.value.startswith("done"):
            raise SystemExit(f"the run did not finish: {widget.status.value}")

    # the same job inline through the core (model already loaded by the widget)
    import napari_sansa as ns

    model = session.models.get(widget.model_panel.settings())
    refs = [ns.Reference(stack[0], [ns.Mask(paint[0] == 1)])]
    model.feature_cache.clear()
    model.result_cache.clear()
    t0 = time.perf_counter()
    model.segment(refs, list(stack[1:]))
    inline = time.perf_counter() - t0

    import torch

    print(
        f"napari-sansa GUI stall benchmark: {args.frames} frames of {s}x{s}, "
        f"{CONFIG} @ {MODEL_SIZE} px (random weights), CPU, torch threads "
        f"{torch.get_num_threads()}, torch imported before the widget opened: {torch_before}, "
        f"background imports after opening: {warmup:.1f} s, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'run':<6} {'total s':>8} {'max stall s':>12} {'p99 gap s':>10} {'ticks':>6} "
        f"{'run() call s':>13} {'max frame handler s':>20}"
    )
    for label, total, worst, p99, n, start, handler in results:
        print(
            f"{label:<6} {total:8.2f} {worst:12.3f} {p99:10.3f} {n:6d} {start:13.3f} "
            f"{handler:20.3f}"
        )
    print(f"inline {inline:8.2f}  (core segment on the main thread, no GUI; features recomputed)")
    viewer.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
