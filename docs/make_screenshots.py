"""Re-make the screenshots of docs/napari.md: napari with the SANSA widget, headless.

    .venv/bin/python docs/make_screenshots.py          # writes docs/images/*.png

Runs under Xvfb (it re-executes itself with ``xvfb-run -a`` when there is no
DISPLAY). The model is SANSA's architecture (SAM2 Hiera-tiny at 256 px) with
RANDOM weights written to a temporary folder, because no pretrained weights can
be downloaded where the docs are built: the workflow and the widget are real,
the masks SANSA draws in these pictures are not meaningful. With real weights
(e.g. ``sansa-universal``) the same steps give real segmentations.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "images"
WINDOW = (1500, 940)
MAX_BYTES = 300_000


def _ensure_display() -> None:
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no DISPLAY and no xvfb-run: run this under a display or Xvfb")
    screen = f"-screen 0 {WINDOW[0] + 100}x{WINDOW[1] + 100}x24"
    os.execv(xvfb, [xvfb, "-a", "-s", screen, sys.executable, *sys.argv])


def _settle(seconds: float = 0.6) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)


def _save(array_or_image, name: str, width: int | None = None) -> Path:
    """Save as an 8-bit palette PNG (small), checking the size limit."""
    from PIL import Image

    img = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    img = img.convert("RGB")
    if width is not None and img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    path = OUT / name
    # fast octree keeps small saturated marks (green and red clicks) that median cut merges
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    size = path.stat().st_size
    print(f"{path} ({img.width}x{img.height}, {size // 1024} KB)")
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size} bytes, over the {MAX_BYTES} limit")
    return path


def _grab(widget):
    from PIL import Image

    pixmap = widget.native.grab()
    image = pixmap.toImage()
    tmp = Path(tempfile.mkstemp(suffix=".png")[1])
    image.save(str(tmp))
    out = Image.open(tmp).copy()
    tmp.unlink()
    return out


def _wait_for_run(widget, timeout: float = 600) -> None:
    end = time.perf_counter() + timeout
    while widget.worker is not None:
        if time.perf_counter() > end:
            raise SystemExit("the run did not finish in time")
        _settle(0.1)


def main() -> None:
    _ensure_display()
    import numpy as np

    from napari_sansa.core.models.random_weights import write_random_checkpoints

    OUT.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="sansa-docs-")
    sam2, adapters = write_random_checkpoints(folder, "sam2_hiera_t", image_size=256, seed=0)
    os.environ.update(
        NAPARI_SANSA_CONFIG="sam2_hiera_t",
        NAPARI_SANSA_SAM2_CHECKPOINT=str(sam2),
        NAPARI_SANSA_ADAPTER_CHECKPOINT=str(adapters),
        NAPARI_SANSA_IMAGE_SIZE="256",
    )

    from napari_sansa.napari.app import launch

    viewer, widget = launch(sample=True, block=False)
    viewer.window.resize(*WINDOW)
    widget.model_panel.device.value = "cpu"
    name = "coins time-lapse"
    refs = viewer.layers[f"{name} [sansa references]"]
    points = viewer.layers[f"{name} [sansa points]"]

    # 1. the sample as it opens: references painted on frame 0
    widget.go_to_frame(0)
    viewer.layers.selection.active = refs
    _settle()
    viewer.reset_view()
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), "sample.png")
    _save(_grab(widget), "widget.png", width=560)

    # 2. prompts of other kinds on frame 3: clicks (positive, negative) and a box
    widget.go_to_frame(3)
    viewer.layers.selection.active = points
    widget.class_id.value = 1
    widget.polarity.value = "positive"
    points.add(np.array([[3, 30, 45], [3, 30, 100]]))
    widget.polarity.value = "negative"
    points.add(np.array([[3, 67, 66]]))
    widget.polarity.value = "positive"
    shapes = widget.new_shapes_button.native.click() or viewer.layers[f"{name} [sansa shapes]"]
    shapes.add_rectangles(np.array([[3, 148, 138], [3, 148, 190], [3, 204, 190], [3, 204, 138]]))
    shapes.mode = "pan_zoom"
    points.mode = "pan_zoom"
    viewer.layers.selection.active = points
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), "prompts.png")

    # 3. after Run: the output layer, the confidence table
    widget.run()
    _wait_for_run(widget)
    out = viewer.layers[f"{name} [sansa]"]
    from qtpy.QtCore import Qt

    widget.scores.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    least = next(f for f in widget.scores.frames() if f not in (0, 3))
    widget.go_to_frame(least)
    viewer.layers.selection.active = out
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), "result.png")

    # 4. correction loop: fix the frame in the output layer, use it as a reference
    from napari_sansa.napari.sample_data import coins_reference

    # a stand-in for a hand correction: the whole coins of that frame painted as class 1
    image = viewer.layers[name].data[least]
    out.data[least] = coins_reference(image, n_objects=20)
    out.refresh()
    widget.use_current_frame_as_reference()
    viewer.layers.selection.active = viewer.layers[f"{name} [sansa references]"]
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), "correction.png")

    # 5. a hand edit on another predicted frame, then Run again: the edit is kept
    other = next(f for f in widget.scores.frames() if f not in (0, 3, least))
    widget.go_to_frame(other)
    viewer.layers.selection.active = out
    out.brush_size = 25
    out.paint((other, 128, 128), 1)
    out.refresh()
    widget.run()
    _wait_for_run(widget)
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), "kept.png")

    # 6. fine-tuning on the complete frames: two more output frames corrected and taken
    more = [f for f in range(1, 8) if f not in (3, least, other)][:2]
    for frame in more:
        out.data[frame] = coins_reference(viewer.layers[name].data[frame], n_objects=20)
        out.refresh()
        widget.go_to_frame(frame)
        widget.use_current_frame_as_reference(classes="all")
    panel = widget.training_panel
    complete = sorted([least, *more])  # frame 0 has three coins painted only: left out
    panel.frames.value = ", ".join(map(str, complete))
    panel.steps.value = 40
    panel.validation.value = 1
    widget.input_size.value = 0
    panel.start()
    while panel.training.worker is not None:
        _settle(0.1)
    _settle()
    _save(_section(widget, panel), "finetune.png", width=560)

    # 7. objects: one label per coin, with the tuned model; counts per frame
    widget.large.instances.value = True
    widget.large.min_size.value = 30
    widget.run()
    _wait_for_run(widget)
    objects = viewer.layers[f"{name} [sansa objects]"]
    for layer in viewer.layers:
        layer.visible = layer in (viewer.layers[name], objects)
    viewer.layers.selection.active = objects
    widget.go_to_frame(least)
    viewer.reset_view()
    _settle()
    _save(_content(viewer.screenshot(canvas_only=True, flash=False)), "objects.png")

    viewer.close()
    shutil.rmtree(folder, ignore_errors=True)


def _content(array):
    """The canvas without its empty black margins."""
    from PIL import Image

    img = Image.fromarray(array).convert("RGB")
    box = img.convert("L").point(lambda v: 255 if v > 8 else 0).getbbox()
    return img.crop(box) if box else img


def _section(widget, panel):
    """The fine-tuning section of the widget, from its heading to its status line."""
    from PIL import Image
    from qtpy.QtCore import QPoint, QRect

    widgets = panel.widgets
    top = widgets[0].native.mapTo(widget.native, QPoint(0, 0)).y() - 28
    last = widgets[-1].native
    bottom = last.mapTo(widget.native, QPoint(0, last.height())).y() + 6
    pixmap = widget.native.grab(QRect(0, max(0, top), widget.native.width(), bottom - top))
    tmp = Path(tempfile.mkstemp(suffix=".png")[1])
    pixmap.toImage().save(str(tmp))
    out = Image.open(tmp).copy()
    tmp.unlink()
    return out


if __name__ == "__main__":
    main()
