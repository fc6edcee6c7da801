"""Open napari with the SANSA widget docked (``napari-sansa gui``)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["display_problem", "launch"]

PLUGIN = "napari-sansa"
WIDGET = "SANSA"
SAMPLE = "coins-timelapse"


#: Qt platforms that need no display
HEADLESS_QT = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def display_problem(environ=None, platform: str | None = None) -> str | None:
    """Why napari cannot open a window here (None: it can): on Linux and other X11/Wayland
    systems, neither ``DISPLAY`` nor ``WAYLAND_DISPLAY`` is set and Qt is not told to draw
    off-screen (``QT_QPA_PLATFORM``). Qt itself would print each of its errors twice and
    abort the process."""
    import os
    import sys

    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "darwin", "cygwin")):
        return None
    qpa = environ.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if qpa in HEADLESS_QT or environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display to open napari on (neither DISPLAY nor WAYLAND_DISPLAY is set): run "
        "'napari-sansa gui' on a desktop, over 'ssh -X', or under a virtual display "
        "('xvfb-run napari-sansa gui'); 'napari-sansa segment' works without a display"
    )


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
