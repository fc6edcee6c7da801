"""A TIFF stack in, one label stack out, read and written one frame at a time."""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_image
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.io import TiffStack, write_tiff_atomic
from napari_sansa.dataset.records import (
    CSV_NAME,
    _describe,
    _predictions,
    _remove_stale_outputs,
    _row,
    _table_record,
    _write_failed,
    source_state,
)

log = logging.getLogger(__name__)


def _process_stack(model, memory, t: Target, out, run, strict, rows, on_frame):
    """A TIFF stack in, one label stack out.

    Frames are read one at a time and the label stack is written as they are
    computed; with probabilities, both go to memory-mapped scratch files first so
    that the label stack (the marker of a finished target) is written last. A
    constant (blank) frame is not given to the model: its labels are all 0 and its
    row in ``scores.csv`` says so (with ``strict``, it stops the run).
    """
    from napari_sansa.core.fusion import label_dtype

    state = source_state(t.source)
    try:
        _remove_stale_outputs(t, out, run)
        stack = TiffStack(t.source)
    except InvalidInputError as exc:
        rows.append(_row(t, "failed", str(exc)))
        if strict:
            raise
        on_frame(t, t.frames)
        return
    hw = tuple(stack.frame_shape[:2])
    n = len(stack)
    classes = list(memory.classes)
    dtype = label_dtype(max(classes))
    shape = (n, *hw)
    scores: list = []
    areas: list = []
    scratch = out / ".napari-sansa" / hashlib.sha1(t.output.encode()).hexdigest()
    probs = labels = None
    if run.probabilities:
        scratch.mkdir(parents=True, exist_ok=True)
        probs = np.lib.format.open_memmap(
            scratch / "p.npy", mode="w+", dtype=np.float32, shape=(n, len(classes), *hw)
        )
        labels = np.lib.format.open_memmap(scratch / "l.npy", mode="w+", dtype=dtype, shape=shape)

    blank: dict[int, str] = {}  # frame -> why it was labelled 0
    objects: list = []  # (objects, table) per frame, with --instances
    fed: list[int] = []  # the frames handed to the model, in order

    def frames():
        for i in range(n):
            img = stack[i]
            try:
                check_image(img, f"frame {i} of {t.source}")
            except InvalidInputError as exc:
                message = _blank_frame(img, i)
                if message is None:  # "the frame 3 of ..." -> "frame 3 of ..."
                    raise InvalidInputError(re.sub(r"^the frame ", "frame ", str(exc))) from None
                if strict:
                    raise InvalidInputError(f"{message} in {t.source}") from None
                blank[i] = message
                continue
            fed.append(i)
            yield img

    def zeros_until(i):
        while len(scores) < i:
            scores.append({})
            areas.append(dict.fromkeys(classes, 0))
            if probs is not None:
                probs[len(scores) - 1] = 0
            if run.objects is not None:
                objects.append(_no_objects(hw))
            on_frame(t, 1)
            yield np.zeros(hw, dtype)

    def pages():
        preds = _predictions(model, memory, frames(), run)
        for k, pred in enumerate(preds):
            i = fed[k]
            yield from zeros_until(i)
            lab = pred.labels
            scores.append({c: pred.scores[c] for c in classes})
            areas.append({c: int((lab == c).sum()) for c in classes})
            if probs is not None:
                probs[i] = np.stack([pred.probabilities[c] for c in classes])
            if run.objects is not None:
                objects.append((pred.objects, pred.object_table))
            on_frame(t, 1)
            yield lab
        yield from zeros_until(n)

    final = out / t.output
    try:
        try:
            if probs is None:
                write_tiff_atomic(
                    final,
                    pages(),
                    shape,
                    dtype,
                    lambda: _describe(t, run, classes, scores, areas, shape, blank, state=state),
                )
            else:
                for i, lab in enumerate(pages()):
                    labels[i] = lab
                write_tiff_atomic(
                    out / t.prob_output,
                    probs,
                    probs.shape,
                    np.float32,
                    _describe(
                        t,
                        run,
                        classes,
                        scores,
                        areas,
                        probs.shape,
                        blank,
                        state=state,
                        role="probabilities",
                    ),
                )
                write_tiff_atomic(
                    final,
                    labels,
                    shape,
                    dtype,
                    _describe(t, run, classes, scores, areas, shape, blank, state=state),
                )
            if run.objects is not None:
                _write_stack_objects(t, out, run, objects, (classes, scores, areas, blank, state))
        except OSError as exc:
            _write_failed(exc, final)
    except InvalidInputError as exc:
        rows.append(_row(t, "failed", str(exc)))
        if strict:
            raise
        on_frame(t, n - len(scores))
        return
    finally:
        stack.close()
        probs = labels = None  # release the memory maps before removing their files
        if scratch.exists():
            for f in scratch.iterdir():
                f.unlink(missing_ok=True)
            scratch.rmdir()
    if blank:
        log.warning(
            "%s: %d constant frame(s) (%s) labelled all 0; listed in %s",
            t.source,
            len(blank),
            ", ".join(map(str, sorted(blank)[:10])) + (", ..." if len(blank) > 10 else ""),
            CSV_NAME,
        )
    for i, (sc, ar) in enumerate(zip(scores, areas, strict=True)):
        if i in blank:
            rows.append(_row(t, "blank", blank[i], frame=i, areas=ar))
        else:
            rows.append(_row(t, "ok", frame=i, scores=sc, areas=ar))


def _no_objects(hw):
    from napari_sansa.core.measures import object_table

    empty = np.zeros(hw, np.uint16)
    return empty, object_table(empty, empty)


def _write_stack_objects(t: Target, out, run, objects, facts) -> None:
    """The object stack of ``t`` (ids unique in the stack) with its table in its record.

    Written after the label stack: a target counts as finished only when both are there
    (see ``records._done_record``), so an interruption in between redoes the stack."""
    from napari_sansa.core.measures import stack_objects

    classes, scores, areas, blank, state = facts
    stack, table = stack_objects(objects)
    desc = _describe(
        t, run, classes, scores, areas, stack.shape, blank, state=state, role="objects"
    )
    desc["napari_sansa"]["objects"] = _table_record(table)
    write_tiff_atomic(out / t.objects_output, stack, stack.shape, stack.dtype, desc)


def _blank_frame(img, i: int) -> str | None:
    """Why frame ``i`` of a stack is blank (every pixel the same value), or None."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    if a.size == 0 or a.dtype.kind not in "biuf":
        return None
    lo, hi = a.min(), a.max()
    if lo != hi or lo != lo:  # varying, or NaN (which is not blank)
        return None
    return f"frame {i} is constant (every pixel is {lo}): nothing to segment, its labels are all 0"
