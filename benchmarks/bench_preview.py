"""How fast does a click show its mask? The preview of the shown frame (issue 20).

Part 1, headless (no Qt, the session's jobs run inline): a 1024 x 1024 RGB frame, SANSA
with random weights built from the real config (no download) at the model's 1024 px.
Measured on the same machine, in the same process:

* ``encode``: one encoding of the frame (``core.preview.cache_features`` on an empty
  feature cache), the cost the preview avoids by preparing the frame ahead;
* ``click -> preview``: from adding a click to a Points layer to the preview layer's
  frame being written (``session.previews.request`` reads the layers, decodes the
  frame's prompts on its cached features as the run would, writes the layer), with the
  frame's features cached; each click changes the prompts, so nothing comes from the
  result cache. Median and worst over ``--clicks`` clicks.
* the ratio of the two (goal: at most 0.1). The widget waits ``DEBOUNCE_S`` of quiet
  after the last edit before asking (rapid clicks make one preview): reported apart.

Part 2, in napari (``--gui``; Xvfb when there is no display): the dock widget on a real
viewer, clicks added one by one on a prepared frame; a 10 ms QTimer on the main thread
measures the longest event-loop stall while the previews update (goal: at most 0.1 s),
the click-to-preview time seen there (debounce and worker included), the longest single
main-thread step of the plugin (reading the layers, writing the preview), and the stall
while the frame is prepared (the model loads in the worker and the preview layer is
made, once per image).

    .venv/bin/python benchmarks/bench_preview.py --config sam2_hiera_t --gui
    .venv/bin/python benchmarks/bench_preview.py --config sam2_hiera_l

This is a benchmark, not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import images, parser, report  # noqa: E402

SIZE = 1024


def _ensure_display() -> None:
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no DISPLAY and no xvfb-run: run this under a display or Xvfb")
    os.execv(xvfb, [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv])


def _clicks(n: int, seed: int = 1):
    import numpy as np

    r = np.random.default_rng(seed)
    return [(float(y), float(x)) for y, x in r.uniform(100, SIZE - 100, size=(n, 2))]


def _source(config: str, folder: str):
    from napari_sansa.core.models.random_weights import write_random_checkpoints
    from napari_sansa.core.models.source import ModelSource

    sam2, adapters = write_random_checkpoints(folder, config, image_size=SIZE, seed=0)
    return ModelSource(
        config=config,
        sam2_checkpoint=str(sam2),
        adapter_checkpoint=str(adapters),
        device="cpu",
        image_size=SIZE,
    )


def headless(source, frame, n_clicks: int) -> dict:
    import numpy as np
    from napari.components import ViewerModel

    from napari_sansa.core.preview import cache_features
    from napari_sansa.napari.session import SansaSession
    from napari_sansa.napari.worker import RunSettings

    session = SansaSession(ViewerModel())
    model = session.models.get(source)
    model.feature_cache.clear()
    t0 = time.perf_counter()
    cache_features(model, frame)
    encode = time.perf_counter() - t0
    viewer = session.viewer
    image = viewer.add_image(frame, name="frame", rgb=True)
    points = viewer.add_points(np.zeros((0, 2)), name="clicks", ndim=2)
    settings = RunSettings()
    times = []
    for y, x in _clicks(n_clicks):
        t0 = time.perf_counter()
        points.add([y, x])
        session.previews.request(image, [points], source, settings, [(0, 0)])
        times.append(time.perf_counter() - t0)
        if session.previews.last.error:
            raise SystemExit(session.previews.last.error)
    return {"encode_s": encode, "click_s": times}


def gui(source, frame, n_clicks: int) -> dict:
    _ensure_display()
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_sansa.napari._qt.widget import SansaWidget

    os.environ.update(
        NAPARI_SANSA_CONFIG=source.config,
        NAPARI_SANSA_SAM2_CHECKPOINT=source.sam2_checkpoint,
        NAPARI_SANSA_ADAPTER_CHECKPOINT=source.adapter_checkpoint,
        NAPARI_SANSA_IMAGE_SIZE=str(SIZE),
    )
    viewer = napari.Viewer(show=True)
    viewer.add_image(frame, name="frame", rgb=True)
    widget = SansaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SANSA")
    widget.model_panel.device.value = "cpu"
    app = QApplication.instance()
    previews = widget.session.previews

    def spin_until(done, limit=600.0):
        end = time.perf_counter() + limit
        while not done() and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    def quiet():
        return (
            previews.worker is None
            and not previews._queue
            and not widget.preview_panel._timer.isActive()
        )

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    ticks.append(time.perf_counter())
    timer.start()
    points = widget.new_points_layer()  # active: the frame is prepared in the background
    spin_until(lambda: ("frame", 0) in previews.prepared and quiet())
    timer.stop()
    ticks.append(time.perf_counter())
    prepare_stall = max(b - a for a, b in zip(ticks, ticks[1:], strict=False))
    written: list[float] = []
    own: list[float] = []  # the plugin's own main-thread work: reading layers, writing
    real_write, real_update = previews._write_previews, widget.preview_panel.update

    def timed_write(result):
        t = time.perf_counter()
        real_write(result)
        written.append(time.perf_counter())
        own.append(written[-1] - t)

    def timed_update():
        t = time.perf_counter()
        real_update()
        own.append(time.perf_counter() - t)

    previews._write_previews = timed_write
    widget.preview_panel._timer.timeout.disconnect()
    widget.preview_panel._timer.timeout.connect(timed_update)
    ticks.clear()
    latencies = []
    ticks.append(time.perf_counter())
    timer.start()
    for y, x in _clicks(n_clicks, seed=2):
        before = len(written)
        t0 = time.perf_counter()
        points.add([y, x])
        spin_until(lambda before=before: len(written) > before and quiet())
        latencies.append(written[before] - t0)
        spin_until(lambda: False, 0.1)  # a person's pause between clicks
    timer.stop()
    ticks.append(time.perf_counter())
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    # the same clicks with previews off: napari's own stall for a click (the floor)
    widget.preview_panel.switch.value = False
    spin_until(lambda: False, 0.5)
    ticks.clear()
    ticks.append(time.perf_counter())
    timer.start()
    for y, x in _clicks(n_clicks, seed=3):
        points.add([y, x])
        spin_until(lambda: False, 0.4)
    timer.stop()
    ticks.append(time.perf_counter())
    floor = max(b - a for a, b in zip(ticks, ticks[1:], strict=False))
    viewer.close()
    return {
        "gui_click_s": latencies,
        "max_stall_s": max(gaps),
        "ticks": len(gaps),
        "prepare_stall_s": prepare_stall,
        "own_main_thread_s": max(own),
        "no_preview_stall_s": floor,
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--config", default="sam2_hiera_t")
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--gui", action="store_true", help="also measure in napari (Xvfb)")
    args = p.parse_args()
    if args.gui:
        _ensure_display()
    import torch

    from napari_sansa.napari.preview import DEBOUNCE_S

    folder = tempfile.mkdtemp(prefix="sansa-bench-preview-")
    try:
        source = _source(args.config, folder)
        frame = images(1, (SIZE, SIZE), seed=3)[0]
        res = headless(source, frame, args.clicks)
        if args.gui:
            res.update(gui(source, frame, args.clicks))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    clicks = res["click_s"]
    med = statistics.median(clicks)
    rows = [
        ("model", f"{args.config} @ {SIZE} px, random weights, CPU"),
        ("torch threads", torch.get_num_threads()),
        ("load average", f"{os.getloadavg()[0]:.1f}"),
        ("encode one frame (s)", f"{res['encode_s']:.3f}"),
        ("click -> preview, cached (s)", f"median {med:.3f}, worst {max(clicks):.3f}"),
        ("ratio (median / encode)", f"{med / res['encode_s']:.3f}  (goal <= 0.1)"),
        ("widget debounce (s)", f"{DEBOUNCE_S:.2f} (quiet time before a preview)"),
    ]
    if "gui_click_s" in res:
        g = res["gui_click_s"]
        rows += [
            (
                "napari: click -> preview (s)",
                f"median {statistics.median(g):.3f}, worst {max(g):.3f}",
            ),
            ("napari: longest stall (s)", f"{res['max_stall_s']:.3f}  (goal <= 0.1)"),
            ("napari: same clicks, previews off (s)", f"{res['no_preview_stall_s']:.3f} stall"),
            ("napari: plugin's main-thread step (s)", f"at most {res['own_main_thread_s']:.3f}"),
            (
                "napari: stall while preparing (s)",
                f"{res['prepare_stall_s']:.3f}  (once per image: the preview layer is made)",
            ),
        ]
    res["ratio"] = med / res["encode_s"]
    report("napari-sansa preview benchmark", rows, res, args.json)


if __name__ == "__main__":
    main()
