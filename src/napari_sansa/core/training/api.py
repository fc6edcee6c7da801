"""``finetune`` and ``finetune_iter``: the public entry points, with their argument checks."""

from __future__ import annotations

import logging
import math
import os
import warnings

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_input_size
from napari_sansa.core.training.episodes import check_prompt_setting
from napari_sansa.core.training.loss import check_dropout
from napari_sansa.core.training.trainer import (
    DEFAULT_VALIDATION,
    STATE_FORMAT,
    Finetuning,
    StepStats,
    TrainingError,
    _Settings,
)

__all__ = ["finetune", "finetune_iter"]

log = logging.getLogger("napari_sansa")


def _whole(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidInputError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")
    if value <= 0:
        raise InvalidInputError(f"{name} must be > 0, got {value!r}")
    return float(value)


def finetune_iter(
    model,
    data,
    *,
    steps: int = 500,
    lr: float = 1e-4,
    shots: int = 1,
    prompt="mask",
    batch_size: int = 2,
    input_size: int | None = 640,
    validation: float | None = None,
    validate_every: int | None = None,
    seed: int = 0,
    dropout: float | None = None,
    fresh_adapters: bool = False,
    stages=(2, 3),
    channel_factor: float = 0.3,
    intensity_range=None,
    cache_bytes: int = 1 << 30,
    resume=None,
) -> Finetuning:
    """Fine-tune ``model``'s adapters on ``data`` one step at a time (see :class:`Finetuning`).

    ``data``: ``[(image, labels), ...]``, fully annotated frames with ``(H, W)`` class maps
    (0 = background); every class must be annotated in at least two frames.
    ``shots``: supports per episode are drawn from 1..shots. ``prompt``: how supports are
    prompted (``mask``, ``box``, ``point``, ``scribble``, ``multi`` or a list of kinds).
    ``validation``: the fraction of frames held out (default 0.2, and at least one frame
    when there are three or more; every class keeps two training frames, so fewer may be
    held out; 0: none). Their episode loss and IoU are in the stats every
    ``validate_every`` steps (default: 20 times per run), and the held-out IoU picks the
    adapters :meth:`Finetuning.result` hands back: the tuned ones only when they did better
    than the starting ones (:attr:`Finetuning.outcome` says which, with both figures;
    without held-out frames the result is unchecked, and it says why). ``dropout``: None
    keeps SAM2's (0.1, the authors'). ``fresh_adapters``: start from new adapters in
    ``stages`` with ``channel_factor`` instead of the loaded ones. ``cache_bytes`` bounds
    the cache of the frozen encoder stages' outputs.
    ``resume``: a :meth:`Finetuning.state_dict` to continue from, or the path of a state
    file written by :meth:`Finetuning.save_state` (read as data only: a file holding
    anything but tensors and plain values, or a damaged one, is refused with an
    :class:`InvalidInputError`).
    """
    if isinstance(resume, (str, os.PathLike)):
        from napari_sansa.core.training.state import load_state

        resume = load_state(resume, fmt=STATE_FORMAT)
    steps = _whole(steps, "steps")
    if validation is None:
        validation = DEFAULT_VALIDATION
    if isinstance(validation, bool) or not isinstance(validation, (int, float)):
        raise InvalidInputError(f"validation must be a fraction in [0, 1), got {validation!r}")
    s = _Settings(
        steps=steps,
        lr=_positive(lr, "lr (the learning rate)"),
        shots=_whole(shots, "shots"),
        prompt=check_prompt_setting(prompt),
        batch_size=_whole(batch_size, "batch_size"),
        input_size=check_input_size(input_size),
        validation=float(validation),
        validate_every=_whole(
            max(1, steps // 20) if validate_every is None else validate_every, "validate_every"
        ),
        seed=_whole(seed, "seed", 0),
        dropout=check_dropout(dropout),
        fresh_adapters=bool(fresh_adapters),
        stages=tuple(stages),
        channel_factor=float(channel_factor),
    )
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
                bar.set_postfix(**_postfix(stats), refresh=True)
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


def _postfix(stats: StepStats) -> dict:
    out = {}
    if stats.loss is not None:
        out["loss"] = f"{stats.loss:.4f}"
    if stats.val_loss is not None:
        out["val"] = f"{stats.val_loss:.4f}"
        out["iou"] = f"{stats.val_iou:.3f}"
    return out
