"""Saving label stacks: a napari writer (one TIFF stack) and one file per frame.

``write_labels_tiff`` is the npe2 writer contribution for Labels layers
(``File > Save Selected Layers...`` with a ``.tif``/``.tiff`` name).
``write_frames`` writes a folder of per-frame files (TIFF or PNG); the widget's
"Save frames" button uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["WRITER_COMMAND", "prefer_labels_tiff_writer", "write_frames", "write_labels_tiff"]

FRAME_FORMATS = ("tif", "png")


def _array(data) -> np.ndarray:
    # a multiscale layer (a list of levels, or napari's MultiScaleData, whose numpy
    # conversion gives its coarsest level): its full resolution
    if isinstance(data, (list, tuple)) or hasattr(data, "shapes"):
        data = data[0]
    return np.asarray(data)


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    """Write a Labels layer's data as one (zlib-compressed) TIFF stack.

    The array keeps its shape and integer dtype (tifffile stores the shape, so
    ``tifffile.imread`` gives it back as it was).
    """
    import tifffile

    array = _array(data)
    path = str(path)
    if not path.lower().endswith((".tif", ".tiff")):
        path += ".tif"
    # minisblack: a (3, H, W) or (..., 4) label stack is frames, never colour planes
    tifffile.imwrite(
        path,
        array,
        photometric="minisblack",
        compression="zlib",
        metadata={"name": meta.get("name", "")},
    )
    return [path]


def write_frames(folder, data, fmt: str = "tif", prefix: str = "labels") -> list[str]:
    """Write every 2D frame of ``data`` (all axes before the last two index frames) as
    ``<prefix>_<index>.<fmt>`` in ``folder`` (made if needed). Returns the paths."""
    import tifffile

    fmt = fmt.lower().lstrip(".")
    if fmt not in FRAME_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FRAME_FORMATS)}")
    array = _array(data)
    if array.ndim < 2:
        raise ValueError(f"labels of shape {array.shape} have no 2D frames")
    if fmt == "png" and array.dtype.kind in "iu" and array.size and array.max() > 65535:
        raise ValueError("PNG holds class ids up to 65535; save as tif instead")
    if fmt == "png" and array.dtype.kind in "iu" and array.size and array.min() < 0:
        raise ValueError("PNG cannot hold negative class ids; save as tif instead")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(prefix)) or "labels"
    lead = array.shape[:-2]
    width = max(len(str(max(lead, default=1) - 1)), 4)
    # PNG: one bit depth for the whole stack
    png_dtype = np.uint8 if array.size == 0 or array.max() < 256 else np.uint16
    out = []
    for index in np.ndindex(*lead):
        name = "_".join([safe, *(f"{i:0{width}d}" for i in index)]) + f".{fmt}"
        path = folder / name
        plane = array[index]
        if fmt == "tif":
            tifffile.imwrite(path, plane, photometric="minisblack", compression="zlib")
        else:
            import imageio.v3 as iio

            iio.imwrite(path, plane.astype(png_dtype, copy=False), extension=".png")
        out.append(str(path))
    return out


#: the npe2 command of :func:`write_labels_tiff` (napari.yaml)
WRITER_COMMAND = "napari-sansa.write_labels_tiff"


def prefer_labels_tiff_writer() -> bool:
    """Put :func:`write_labels_tiff` ahead of napari's built-in labels writer.

    npe2 picks the writer for a path among the compatible ones by the longest
    matching extension, then by the order in which plugins were registered; napari's
    built-in writer (which stores any Labels layer as uint32) declares ``.tif`` and
    ``.tiff`` too and is registered first, so File > Save Selected Layers and
    ``viewer.layers.save("x.tif")`` went to it. npe2 has no public priority setting:
    this moves this plugin's writer to the front of npe2's writer index (the session
    calls it when the widget opens). Returns whether it could (False when npe2's
    index is not where this npe2 version keeps it, or the plugin is not registered).
    """
    from npe2 import PluginManager

    index = getattr(getattr(PluginManager.instance(), "_contrib", None), "_writers", None)
    if not isinstance(index, list):
        return False
    ours = [entry for entry in index if entry[-1].command == WRITER_COMMAND]
    if not ours:
        return False
    index[:] = ours + [entry for entry in index if entry[-1].command != WRITER_COMMAND]
    return True
