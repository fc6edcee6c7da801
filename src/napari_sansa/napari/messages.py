"""Errors told to a person using the widget: what happened and what to do *in the GUI*.

The core's messages speak to every user (command-line flags, Python keywords); here a
failure gets a short message that names the widget's own controls, and the full text
(the core's message, a network library's report) stays available as details.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["gui_message", "option_name"]

_NETWORK = ("HTTPSConnectionPool", "NameResolutionError", "Max retries exceeded", "urlopen error")
CUSTOM_HINT = (
    "or choose 'custom files' under Model and pick the SAM2 weights (and adapter) files you have"
)


def _missing_files(name: str | None) -> list[Path]:
    if not name:
        return []
    import napari_sansa as ns

    for m in ns.list_models():
        if m["name"] == name:
            return [Path(p) for p in m["files"].values() if not Path(p).is_file()]
    return []


#: options the viewer has no control for, in its words (None: it does not have it)
_VIEWER_WORDS = {"out": "output folder", "overwrite": None, "axes": None}  # no axes option


def option_name(option: str) -> str | None:
    """A run option as the viewer's words call it when no control is known for it."""
    if option in _VIEWER_WORDS:
        return _VIEWER_WORDS[option]
    return f"'{option.replace('_', ' ')}'"


def gui_message(exc: BaseException, model_settings=None, names=None) -> tuple[str, str]:
    """(short message for the status and the notification, full details). An error about
    a run option (an :class:`~napari_sansa.core.errors.OptionError`) or about the output
    folder is worded with ``names(option)``: the widget's names of its controls
    (default :func:`option_name`)."""
    from napari_sansa.core.errors import ModelNotFoundError, OptionError

    if isinstance(exc, OptionError):
        return exc.worded(names or option_name), str(exc)
    details = str(exc) or type(exc).__name__
    name = getattr(model_settings, "name", None)
    offline = any(key in details for key in _NETWORK)
    if name and (isinstance(exc, ModelNotFoundError) or offline):
        files = _missing_files(name)
        where = (
            "put " + " and ".join(f"{p.name}" for p in files) + f" in {files[0].parent}"
            if files
            else "put its files in napari-sansa's weights folder"
        )
        offline = offline or "downloads are off" in details
        why = "could not be downloaded (no internet connection?)" if offline else "are missing"
        short = (
            f"the weights of '{name}' are not on disk and {why}: {where}, {CUSTOM_HINT}. "
            "Details: hover over this message"
        )
        return short, details
    short = re.sub(
        r"use config='([\w.+-]+)'", r"choose '\1' under 'config' (custom files)", details
    )
    if any(key in short for key in _NETWORK):
        return "a network error stopped the run (no internet connection?)", details
    return short, details


def frames_text(frames) -> str:
    """``frame 3`` or ``frames 1, 4, 5``."""
    frames = list(frames)
    return f"frame {frames[0]}" if len(frames) == 1 else f"frames {', '.join(map(str, frames))}"


def classes_text(classes) -> str:
    """``class 2`` or ``classes 1, 3``."""
    classes = list(classes)
    if len(classes) == 1:
        return f"class {classes[0]}"
    return f"classes {', '.join(map(str, classes))}"
