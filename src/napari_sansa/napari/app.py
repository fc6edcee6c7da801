"""Open napari with the SANSA widget docked (``napari-sansa gui``)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["launch"]

PLUGIN = "napari-sansa"
WIDGET = "SANSA"
SAMPLE = "coins-timelapse"


def launch(paths: Iterable = (), sample: bool = False, block: bool = True):
    """Open a napari viewer, add ``paths`` (any file napari can read) and, with
    ``sample``, the coins time-lapse sample; dock the SANSA widget and run napari.

    With ``block=False`` napari's event loop is not started and ``(viewer, widget)``
    is returned (for scripts and tests); with ``block=True`` this returns when the
    window is closed.
    """
    import napari

    viewer = napari.Viewer()
    paths = [str(p) for p in paths]
    if paths:
        viewer.open(paths)
    if sample:
        viewer.open_sample(PLUGIN, SAMPLE)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if block:
        napari.run()
    return viewer, widget
