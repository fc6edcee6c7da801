"""The rows of ``scores.csv``: one per target, or per frame of a stack."""

from __future__ import annotations

import numpy as np

from napari_sansa.dataset.discovery import Target

CSV_NAME = "scores.csv"


def score_row(
    target: Target, status: str, message: str = "", frame=None, scores=None, areas=None, at=None
):
    """A row of ``scores.csv``; ``at``: a stack frame's index per axis, ``{"t": 3, "z": 1}``."""
    row = {
        "target": target.source,
        "frame": "" if frame is None else frame,
        **(at or {}),
        "output": target.output if status in ("ok", "blank", "reference") else "",
        "status": status,
        "message": message,
    }
    for c, s in (scores or {}).items():
        row[f"score_{c}"] = f"{s:.4f}"
    for c, a in (areas or {}).items():
        row[f"area_{c}"] = a
    return row


def frame_at(info: dict | None, frame) -> dict:
    """A stack frame's index per frame axis, ``{"t": 3, "z": 1}``, from the record of
    the stack's output (``{}`` for outputs of images, of 0.1, which record no axes, and
    of stacks whose one frame axis has no known meaning: its index is the frame's)."""
    layout = (info or {}).get("frames")
    if not isinstance(layout, dict) or frame in ("", None):
        return {}
    axes, sizes = str(layout.get("axes", "")), layout.get("sizes") or []
    if not axes or len(axes) != len(sizes) or (len(axes) == 1 and axes not in "TZ"):
        return {}
    where = np.unravel_index(int(frame), [int(n) for n in sizes])
    return {a.lower(): int(i) for a, i in zip(axes, where, strict=True)}
