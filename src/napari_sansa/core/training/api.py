"""``finetune`` and ``finetune_iter``: the public entry points, with their argument checks."""

from __future__ import annotations

import logging
import os
import warnings

from napari_sansa.core.training.options import FinetuneOptions
from napari_sansa.core.training.trainer import STATE_FORMAT, Finetuning, StepStats, TrainingError

__all__ = ["finetune", "finetune_iter", "step_postfix"]

log = logging.getLogger("napari_sansa")


def finetune_iter(
    model,
    data,
    options: FinetuneOptions | None = None,
    *,
    intensity_range=None,
    cache_bytes: int = 1 << 30,
    resume=None,
    **keywords,
) -> Finetuning:
    """Fine-tune ``model``'s adapters on ``data`` one step at a time (see :class:`Finetuning`).

    ``data``: ``[(image, labels), ...]``, fully annotated frames with ``(H, W)`` class maps
    (0 = background); every class must be annotated in at least two frames.
    ``options``: a :class:`~napari_sansa.FinetuneOptions`; ``keywords``: its fields
    (``steps``, ``lr``, ``shots``, ``prompt``, ``batch_size``, ``validation``, ...),
    replacing those of ``options``. ``validation``: the fraction of frames held out
    (default 0.2, and at least one frame when there are three or more; every class keeps
    two training frames, so fewer may be held out; 0: none). Their episode loss and IoU
    are in the stats every ``validate_every`` steps (default: 20 times per run), and the
    held-out IoU picks the adapters :meth:`Finetuning.result` hands back: the tuned ones
    only when they did better than the starting ones (:attr:`Finetuning.outcome` says
    which, with both figures; without held-out frames the result is unchecked, and it
    says why). ``intensity_range``: ``(low, high)`` mapped to [0, 1] for every frame
    (default: each image's dtype rule). ``cache_bytes`` bounds the cache of the frozen
    encoder stages' outputs.
    ``resume``: a :meth:`Finetuning.state_dict` to continue from, or the path of a state
    file written by :meth:`Finetuning.save_state` (read as data only: a file holding
    anything but tensors and plain values, or a damaged one, is refused with an
    :class:`InvalidInputError`).
    """
    if isinstance(resume, (str, os.PathLike)):
        from napari_sansa.core.training.state import load_state

        resume = load_state(resume, fmt=STATE_FORMAT)
    s = FinetuneOptions.make(options, **keywords).resolved()
    return Finetuning(model, data, s, intensity_range=intensity_range,
                      cache_bytes=cache_bytes, resume=resume)  # fmt: skip


def finetune(model, data, *, progress: bool = False, **kwargs):
    """Fine-tune and return the tuned model (a new :class:`SansaModel`; ``model`` is
    unchanged). Arguments as :func:`finetune_iter`; ``progress`` shows a tqdm bar.

    The returned model holds the adapters that did best on the held-out frames: the
    starting ones when tuning did not raise the held-out IoU. Its ``finetune_report`` says
    which (a :class:`~.trainer.FinetuneReport`); it is also logged, and a warning is issued
    when the starting adapters were kept or nothing was checked. A non-finite loss stops
    the run and raises :class:`TrainingError` (its ``model``: the adapters kept)."""
    run = finetune_iter(model, data, **kwargs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.settings.steps, desc="fine-tuning", unit="step")
    try:
        for stats in run:
            if bar is not None:
                bar.n = stats.step
                bar.set_postfix(**step_postfix(stats), refresh=True)
    except TrainingError as exc:
        exc.model = run.result()
        raise
    finally:
        if bar is not None:
            bar.close()
    tuned = run.result()
    say(run.outcome)
    return tuned


def say(report) -> None:
    """Log a run's :class:`FinetuneReport`, or warn with it when it kept the starting
    adapters or checked nothing."""
    if report.checked and report.kept == "tuned":
        log.info("fine-tuning: %s", report)
    else:
        warnings.warn(f"fine-tuning: {report}", UserWarning, stacklevel=3)


def step_postfix(stats: StepStats) -> dict:
    """A step's figures for a progress bar's postfix (``finetune(progress=True)`` and the
    ``napari-sansa finetune`` command show the same)."""
    out = {}
    if stats.loss is not None:
        out["loss"] = f"{stats.loss:.4f}"
    if stats.val_loss is not None:
        out["val"] = f"{stats.val_loss:.4f}"
        out["iou"] = f"{stats.val_iou:.3f}"
    return out
