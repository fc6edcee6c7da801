"""Re-make the screenshots of docs/napari.md: napari with the SANSA widget, headless.

    .venv/bin/python docs/make_screenshots.py          # writes docs/images/*.png
    .venv/bin/python docs/make_screenshots.py folder   # only docs/images/folder.png

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
SCREEN = (1600, 1000)  # napari opens at 1089 px wide on this screen (its default size)
MAX_BYTES = 300_000


def _ensure_display() -> None:
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no DISPLAY and no xvfb-run: run this under a display or Xvfb")
    screen = f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24"
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


def pages(viewer, widget, prefix: str = "page") -> None:
    """Each page of the dock as it is shown at napari's default window (the dock's own
    size, nothing scrolled away): docs/images/page-<name>.png. Pages whose tab is hidden
    (Tracks, shown by a run with tracks) are left out: tracks.png shows that one."""
    for title in widget.pages:
        if widget.page_buttons[title].isHidden():
            continue
        widget.show_page(title)
        _settle(0.3)
        slug = title.lower().replace(" ", "-")
        _save(_grab(widget), f"{prefix}-{slug}.png")
    widget.show_page("Label")


def _shot(viewer, name: str) -> None:
    _settle()
    _save(viewer.screenshot(canvas_only=False, flash=False), name)


def _show_results(widget) -> None:
    """The main page: the confidence plot and table are on it."""
    widget.show_page("Label")
    _settle(0.2)


def _fresh_settings() -> None:
    """Each picture starts from the widget's defaults: no settings remembered from the
    person's own napari-sansa, nor from the picture before (objects, a tuned model...)."""
    folder = Path(tempfile.mkdtemp(prefix="sansa-docs-settings-"))
    os.environ["NAPARI_SANSA_SETTINGS"] = str(folder / "widget.json")


def _new(launch):
    _fresh_settings()
    viewer, widget = launch(sample=False, block=False)
    widget.model_panel.device.value = "cpu"
    return viewer, widget


def image_set(launch) -> None:
    """Three photos of different sizes, side by side: one painted, two labelled."""
    import numpy as np
    from skimage import data

    viewer, widget = _new(launch)
    x = 0
    for name in ("astronaut", "coffee", "camera"):
        img = getattr(data, name)()
        viewer.add_image(img, name=name, translate=(0, x))
        x += img.shape[1] + 40
    widget.select_images(["astronaut", "coffee", "camera"])
    paint = widget.new_labels_layer()
    rr, cc = np.ogrid[:512, :512]
    paint.data[(rr - 130) ** 2 + (cc - 240) ** 2 < 80**2] = 1  # the face
    paint.refresh()
    paint.mode = "pan_zoom"
    widget.run()
    _wait_for_run(widget)
    viewer.reset_view()
    _show_results(widget)
    _shot(viewer, "imageset.png")
    viewer.close()


def _blobs(t: int, seed: int, shape=(192, 192), n: int = 9):
    import numpy as np

    r = np.random.default_rng(seed)
    centres = r.uniform(20, shape[0] - 20, (n, 2))
    drift = r.normal(0, 3, (n, 2))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros((t, *shape))
    for i in range(t):
        for cy, cx in centres + i * drift:
            out[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 9.0**2))
    return out


def _painted(launch, data, name: str, axes: tuple, index: tuple, mask):
    """A viewer with the stack ``data`` (its ``axes`` declared) chosen in the widget,
    ``mask`` painted as class 1 at ``index`` of its references layer."""
    import numpy as np

    viewer, widget = _new(launch)
    viewer.add_image(data, name=name, axis_labels=axes)
    widget.select_images([name])
    paint = widget.new_labels_layer()
    paint.data[index] = np.asarray(mask, dtype=np.uint8)
    paint.refresh()
    paint.mode = "pan_zoom"
    return viewer, widget


def timelapse(launch) -> None:
    """A 16-bit two-channel time-lapse (T, C, Y, X) with declared axes."""
    import numpy as np

    nuclei = _blobs(6, 1)
    membrane = _blobs(6, 1) * 0.4 + _blobs(6, 2) * 0.6
    stack = (np.stack([nuclei, membrane], axis=1) * 3000 + 100).astype(np.uint16)
    axes = ("t", "c", "y", "x")
    viewer, widget = _painted(launch, stack, "time-lapse", axes, (0, 0), stack[0, 0] > 1500)
    widget.run()
    _wait_for_run(widget)
    widget.go_to_frame(3)
    _shot(viewer, "timelapse.png")
    viewer.close()


def zstack(launch) -> None:
    """A z-stack labelled in sequential mode along z."""
    import numpy as np
    from skimage.data import binary_blobs
    from skimage.filters import gaussian

    blobs = binary_blobs(length=160, n_dim=3, volume_fraction=0.2, rng=3)[::12]
    volume = (gaussian(blobs.astype(float), sigma=2) * 255).astype(np.uint8)
    viewer, widget = _painted(launch, volume, "z-stack", ("z", "y", "x"), (0,), blobs[0])
    widget.mode.value = "sequential"
    widget.run()
    _wait_for_run(widget)
    widget.go_to_frame(5)
    _shot(viewer, "zstack.png")
    viewer.close()


def _folder_run_opened(viewer, widget, images, labels_to, row: int):
    """Label the folder ``images`` into ``labels_to`` from the Folder page, hide the
    layers, open result ``row``: its (image, labels) layers."""
    _previews_quiet(widget)  # the painted layer's preview made before the run's layers
    widget.select_folder(images, labels_to)
    widget.run()
    _wait_for_run(widget)
    for layer in list(viewer.layers):
        layer.visible = False
    return widget.folder.open_row(row)


def _folder_shot(viewer, widget, row: int, name: str, scratch: Path) -> None:
    """The Folder page with result ``row`` selected, saved as ``name``; the viewer closed
    and the ``scratch`` folder removed."""
    viewer.reset_view()
    widget.folder.list.setCurrentRow(row)
    widget.show_page("Folder")
    _shot(viewer, name)
    viewer.close()
    shutil.rmtree(scratch, ignore_errors=True)


def folder_run(launch) -> None:
    """A folder on disk labelled from one painted image; one result opened to check it."""
    import imageio.v3 as iio
    from skimage import data

    from napari_sansa.napari.sample_data import coins_reference

    coins = data.coins()
    root = Path(tempfile.mkdtemp(prefix="sansa-folder-")) / "data"
    images = root / "coins"
    images.mkdir(parents=True)
    crops = [(0, 0, 190, 190), (0, 150, 200, 384), (110, 0, 303, 230), (100, 170, 303, 384)]
    for i, (r0, c0, r1, c1) in enumerate(crops):
        iio.imwrite(images / f"coins-{i + 1}.png", coins[r0:r1, c0:c1])
    viewer, widget = _new(launch)
    reference = coins[40:230, 100:290]
    viewer.add_image(reference, name="painted coins")
    widget.select_images(["painted coins"])
    paint = widget.new_labels_layer()
    paint.data[:] = coins_reference(reference, n_objects=4)
    paint.refresh()
    paint.mode = "pan_zoom"
    image, labels = _folder_run_opened(viewer, widget, images, root / "labels", 1)
    viewer.layers.selection.active = labels
    _folder_shot(viewer, widget, 1, "folder.png", root.parent)


def folder_tracks(launch) -> None:
    """A folder of time-lapses labelled and linked into tracks from the Folder page (one
    time-lapse painted in the viewer, 'tracks' ticked); one result opened."""
    import numpy as np
    import tifffile

    root = Path(tempfile.mkdtemp(prefix="sansa-folder-tracks-")) / "data"
    movies = root / "time-lapses"
    movies.mkdir(parents=True)
    image, masks = _dividing_cells()
    for i, flip in enumerate(((), (1,), (2,))):
        tifffile.imwrite(movies / f"movie-{i + 1}.tif", np.flip(image, flip) if flip else image,
                         imagej=True, metadata={"axes": "TYX"})  # fmt: skip
    viewer, widget = _painted(launch, image, "movie-1", ("t", "y", "x"), (0,), masks[0])
    widget.large.tracks.value = True
    widget.large.min_size.value = 20
    image_layer, labels = _folder_run_opened(viewer, widget, movies, root / "labels", 0)
    labels.visible = False  # the image and its track labels, as Open result adds them
    viewer.layers.selection.active = viewer.layers["movie-1 tracks (labels)"]
    widget.go_to_frame(6)
    _folder_shot(viewer, widget, 0, "folder-tracks.png", root.parent)


def tz_ranges(launch) -> None:
    """A (T, Z) stack labelled within a range on each axis, sequentially along z."""
    import numpy as np

    stack = np.stack([_blobs(6, seed) for seed in range(4)])  # (T=4, Z=6, Y, X)
    stack = (stack / stack.max() * 255).astype(np.uint8)
    axes = ("t", "z", "y", "x")
    viewer, widget = _painted(launch, stack, "t x z", axes, (0, 0), stack[0, 0] > 120)
    widget.mode.value = "sequential"
    widget.axes.ranges.set(0, 1, 3)  # t 1..3
    widget.axes.ranges.set(1, 2, 4)  # z 2..4
    widget.run()
    _wait_for_run(widget)
    widget.go_to_frame(2 * 6 + 3)
    _shot(viewer, "ranges.png")
    viewer.close()


def _dividing_cells(t: int = 8, shape=(192, 192)):
    """Cells drifting over ``t`` frames, one dividing at frame 4: (image, masks)."""
    import numpy as np

    r = np.random.default_rng(5)
    centres = r.uniform(30, shape[0] - 30, (7, 2))
    drift = r.normal(0, 2.5, (7, 2))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros((t, *shape))
    for i in range(t):
        cells = [c + i * d for c, d in zip(centres[1:], drift[1:], strict=True)]
        c0 = centres[0] + i * drift[0]
        if i < 4:
            cells.append(c0)
        else:  # the first cell divides: two daughters moving apart
            cells += [c0 + (0, 3.0 * (i - 2)), c0 - (0, 3.0 * (i - 2))]
        for cy, cx in cells:
            image[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 7.0**2))
    return (image * 200 + 20).astype(np.uint8), image > 0.5


def _tracks_run(launch):
    """A time-lapse run once, its frames then corrected by hand (a stand-in: random
    weights draw no real masks), run again with tracks ticked (the corrected frames are
    kept, their objects linked); the track labels and the Tracks layer shown."""
    image, masks = _dividing_cells()
    viewer, widget = _painted(launch, image, "cells", ("t", "y", "x"), (0,), masks[0])
    widget.run()
    _wait_for_run(widget)
    out = viewer.layers["cells [sansa]"]
    for t in range(1, len(masks)):
        out.data[t] = masks[t].astype(out.data.dtype)  # the person's corrections
    out.refresh()
    widget.large.tracks.value = True
    widget.large.min_size.value = 20
    widget.run()
    _wait_for_run(widget)
    for layer in viewer.layers:
        shown = ("cells", "cells [sansa track labels]", "cells [sansa tracks]")
        layer.visible = layer.name in shown
    return viewer, widget


def tracks(launch) -> None:
    """The track labels, the Tracks layer, the tracks table (track 1 selected)."""
    viewer, widget = _tracks_run(launch)
    session = widget.session
    first = int(session.tracks.table["track"][0])
    widget.tracks_panel.table.select_track(first)
    widget.go_to_frame(6)
    viewer.layers.selection.active = viewer.layers["cells [sansa tracks]"]
    viewer.reset_view()
    widget.show_page("Tracks")  # the run turned to it; the table of tracks
    _shot(viewer, "tracks.png")
    viewer.close()


def tracks_painted(launch) -> None:
    """Painting on the track labels of frame 6 with napari's own tools: a cell the
    objects missed painted with a new id (the brush), a track erased from the frame
    (the fill with 0); the Tracks page, the Tracks layer and the status follow."""
    import numpy as np

    viewer, widget = _tracks_run(launch)
    labels = viewer.layers["cells [sansa track labels]"]
    widget.go_to_frame(6)
    viewer.layers.selection.active = labels
    viewer.reset_view()
    _settle()
    plane = np.asarray(labels.data[6])
    erased = int(np.bincount(plane[plane > 0]).argmax())  # the largest track of the frame
    labels.fill((6, *np.argwhere(plane == erased)[0]), 0)
    new = int(np.asarray(labels.data).max()) + 1
    labels.brush_size = 14
    for x in (150, 156, 162):  # a short stroke: a cell the run missed, a new id
        labels.paint((6, 176, x), new)
    labels.selected_label = new
    labels.mode = "paint"
    widget.tracks_panel.table.select_track(new)
    widget.show_page("Tracks")
    _shot(viewer, "tracks-painted.png")
    viewer.close()


def _wait_for_run(widget, timeout: float = 600) -> None:
    end = time.perf_counter() + timeout
    while widget.worker is not None:
        if time.perf_counter() > end:
            raise SystemExit("the run did not finish in time")
        _settle(0.1)


def _previews_quiet(widget, timeout: float = 600) -> None:
    previews = widget.session.previews
    end = time.perf_counter() + timeout
    _settle(0.2)
    while previews.worker is not None or previews._queue or widget.preview_panel._timer.isActive():
        if time.perf_counter() > end:
            raise SystemExit("the preview did not finish in time")
        _settle(0.1)


def preview_and_fix(launch) -> None:
    """The preview of clicks and a box on frame 3 of the sample; then, after a run, a
    click fix on a labelled frame."""
    import numpy as np

    viewer, widget = launch(sample=True, block=False)
    widget.model_panel.device.value = "cpu"
    name = "coins time-lapse"
    points = viewer.layers[f"{name} [sansa points]"]
    widget.go_to_frame(3)
    viewer.layers.selection.active = points
    _previews_quiet(widget)  # frame 3 prepared while the points layer is active
    widget.class_id.value = 1
    widget.polarity.value = "positive"
    points.add(np.array([[3, 30, 45], [3, 30, 100]]))
    widget.polarity.value = "negative"
    points.add(np.array([[3, 67, 66]]))
    widget.polarity.value = "positive"
    shapes = widget.new_shapes_button.native.click() or viewer.layers[f"{name} [sansa shapes]"]
    widget.class_id.value = 2
    shapes.add_rectangles(np.array([[3, 148, 138], [3, 148, 190], [3, 204, 190], [3, 204, 138]]))
    shapes.mode = "pan_zoom"
    points.mode = "pan_zoom"
    viewer.layers.selection.active = points
    _previews_quiet(widget)
    viewer.reset_view()
    _shot(viewer, "preview.png")

    widget.class_id.value = 1
    widget.preview_panel.switch.value = False  # the run's output is what is fixed
    widget.run()
    _wait_for_run(widget)
    out = viewer.layers[f"{name} [sansa]"]
    frame = 5
    widget.go_to_frame(frame)
    fix = widget.preview_panel.new_fix_layer()
    widget.preview_panel.switch.value = True
    _previews_quiet(widget)
    before = np.array(out.data[frame])
    for layer in viewer.layers:  # the image, the output and the fix clicks only
        layer.visible = layer in (viewer.layers[name], out, fix)
    viewer.reset_view()
    _settle(1.5)
    shown = _content(viewer.screenshot(canvas_only=True, flash=False))
    fix.add(np.array([[frame, 100, 140]]))
    _previews_quiet(widget)
    widget.polarity.value = "negative"
    fix.add(np.array([[frame, 60, 60]]))
    _previews_quiet(widget)
    changed = int((np.asarray(out.data[frame]) != before).sum())
    print(f"fix: {changed} pixels of frame {frame} changed; status: {widget.status.value}")
    fix.mode = "pan_zoom"
    viewer.reset_view()  # the whole frame again (the dock's width may have changed)
    _settle(1.5)
    fixed = _content(viewer.screenshot(canvas_only=True, flash=False))
    _save(_side_by_side(shown, fixed), "fix.png", width=1089)
    viewer.close()


def _side_by_side(left, right, gap: int = 12):
    """Two pictures next to each other on a dark background (before | after), the
    right one scaled to the left one's height."""
    from PIL import Image

    if right.height != left.height:
        w = round(right.width * left.height / right.height)
        right = right.resize((w, left.height), Image.LANCZOS)
    out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


#: ``make_screenshots.py NAME ...`` retakes only these pictures
def multiscale(launch) -> None:
    """A 2048 x 2048 slide opened as a 4-level pyramid of dask arrays (as napari-ome-zarr
    opens an OME-Zarr), clicked while zoomed in, labelled at full resolution by tiles."""
    import dask.array as da
    import numpy as np
    from skimage import data

    tissue = np.kron(data.immunohistochemistry(), np.ones((4, 4, 1), np.uint8))  # 2048 px
    slide = np.stack([tissue, np.ascontiguousarray(np.rot90(tissue))])  # 2 sections
    levels = [da.from_array(slide[:, :: 2**k, :: 2**k], chunks=(1, 512, 512, 3)) for k in range(4)]
    viewer, widget = _new(launch)
    viewer.add_image(levels, multiscale=True, name="slide", rgb=True, scale=(1, 0.25, 0.25))
    widget.select_images(["slide"])
    widget.large.tile_size.value = 512
    points = widget.new_points_layer()
    viewer.reset_view()
    camera = viewer.scene.camera
    camera.center, camera.zoom = (0, 330, 280), camera.zoom * 2.5  # zoomed in on a gland
    _settle()
    # clicks on three glands of section 0 (the points layer has the image's pixels)
    points.add([[0, 1520, 1240], [0, 400, 480], [0, 480, 1520]])
    points.mode = "pan_zoom"
    widget.run()
    _wait_for_run(widget)
    widget.go_to_frame(0)
    layers = viewer.layers
    layers.move(layers.index(points), len(layers))  # the clicks above the labels
    _show_results(widget)
    _settle()
    _shot(viewer, "multiscale.png")


def _sample_pages(launch) -> None:
    """The pages with the sample as it opens (docs/images/page-*), its preview done."""
    _fresh_settings()
    viewer, widget = launch(sample=True, block=False)
    widget.model_panel.device.value = "cpu"
    _settle()
    _previews_quiet(widget)
    pages(viewer, widget)
    viewer.close()


ONLY = {
    "multiscale": multiscale,
    "sample-pages": _sample_pages,
    "imageset": image_set,
    "timelapse": timelapse,
    "zstack": zstack,
    "ranges": tz_ranges,
    "folder": folder_run,
    "folder-tracks": folder_tracks,
    "pages": lambda launch: _pages_of_photos(launch),
    "options-follow": lambda launch: options_follow(launch),
    "preview": preview_and_fix,
    "tracks": tracks,
    "tracks-painted": tracks_painted,
}


def options_follow(launch) -> None:
    """The Options page of a 16-bit time-lapse with tracks and 'follow with SAM2' ticked,
    scrolled to them: docs/images/options-follow.png."""
    import numpy as np

    viewer, widget = _new(launch)
    rng = np.random.default_rng(0)
    movie = (rng.random((8, 200, 260)) * 4000).astype(np.uint16)
    viewer.add_image(movie, name="cells (t)", axis_labels=("t", "y", "x"))
    widget.select_images(["cells (t)"])
    widget.large.tracks.value = True
    widget.large.follow.value = True
    widget.show_page("Options")
    _settle(0.4)
    bar = widget.pages["Options"].verticalScrollBar()
    bar.setValue(bar.maximum())
    _settle(0.4)
    _save(_grab(widget), "options-follow.png")
    viewer.close()


def _pages_of_photos(launch) -> None:
    """The pages with an image set of three photos chosen (no run): docs/images/page-*."""
    from skimage import data

    viewer, widget = _new(launch)
    for name in ("astronaut", "coffee", "camera"):
        viewer.add_image(getattr(data, name)(), name=name)
    widget.select_images(["astronaut"])
    widget.new_points_layer()
    pages(viewer, widget, prefix="photos")
    viewer.close()


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

    if sys.argv[1:]:
        for name in sys.argv[1:]:
            ONLY[name](launch)
        shutil.rmtree(folder, ignore_errors=True)
        return

    _fresh_settings()
    viewer, widget = launch(sample=True, block=False)
    widget.model_panel.device.value = "cpu"
    _settle()
    window = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    print(
        f"window {window.width()} px, canvas {canvas.width()} px, dock {widget.native.width()} px"
    )
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
    _previews_quiet(widget)  # the pages show the preview's outcome, not "loading the model"
    pages(viewer, widget)

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
    _show_results(widget)
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
    _show_results(widget)
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
    widget.show_page("Fine-tune")
    _settle()
    _save(_grab(widget), "finetune.png")
    _save(viewer.screenshot(canvas_only=False, flash=False), "finetune-window.png")
    widget.show_page("Label")

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
    image_set(launch)
    timelapse(launch)
    zstack(launch)
    tz_ranges(launch)
    folder_run(launch)
    folder_tracks(launch)
    preview_and_fix(launch)
    multiscale(launch)
    tracks(launch)
    tracks_painted(launch)
    shutil.rmtree(folder, ignore_errors=True)


def _content(array):
    """The canvas without its empty black margins."""
    from PIL import Image

    img = Image.fromarray(array).convert("RGB")
    box = img.convert("L").point(lambda v: 255 if v > 8 else 0).getbbox()
    return img.crop(box) if box else img


if __name__ == "__main__":
    main()
