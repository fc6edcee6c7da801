"""Fine-tuning from napari, without Qt: which frames, the run in a worker, the two models.

The frames come from :func:`~.training_frames.collect_training_frames` (a Labels layer
of complete annotations, by default the image's "[sansa references]" layer, read into
frozen ``(image, labels)`` pairs). :class:`TrainingSession` starts
napari's worker on :func:`train_steps` (the core's ``finetune_iter``, one step per
``yield``; Stop ends it between two steps and keeps the best state so far), then
holds both models: the one that was loaded and the tuned one. The tuned one is taken
(and used) only when the held-out frames showed it better than the loaded one, or when
no frame could be held out (the message then says it is unchecked); the run's
:class:`~napari_sansa.core.training.FinetuneReport` is shown either way. ``model_source`` tells
the widget's runs which to use; the session's model cache gets the tuned model through
a :class:`HeldSource` (and the loaded model too, so that going back loads nothing), so
the worker still takes its model from the cache only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from napari_sansa.napari.geometry import PromptError
from napari_sansa.napari.training_frames import (
    TrainingData,
    annotated_frames,
    collect_training_frames,
    frames_text,
    parse_frames,
)
from napari_sansa.napari.worker import leave_a_core_for_napari, start_worker, worker_factory

__all__ = [
    "TrainingData",
    "TrainingOutcome",
    "TrainingSession",
    "TrainingSettings",
    "HeldSource",
    "annotated_frames",
    "collect_training_frames",
    "parse_frames",
    "train_steps",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """What the widget's fine-tuning section sets: the core's
    :class:`~napari_sansa.FinetuneOptions` (``finetune``: the authors' defaults but for
    what the section sets) and the frames held out to pick the best state (0: none),
    whose fraction of the frames is the options' ``validation`` when the run starts."""

    finetune: object = None  # a FinetuneOptions (None: the defaults)
    validation_frames: int = 1

    def __post_init__(self):
        from napari_sansa.core.training.options import FinetuneOptions

        if self.finetune is None:
            object.__setattr__(self, "finetune", FinetuneOptions())
        elif not isinstance(self.finetune, FinetuneOptions):
            raise TypeError(f"finetune must be a FinetuneOptions, got {self.finetune!r}")

    @classmethod
    def make(cls, *, like=None, validation_frames: int = 1, **keywords) -> TrainingSettings:
        """``keywords``: FinetuneOptions' fields; ``like``: the widget's run options (a
        SegmentOptions), whose pre-processing the tuning uses (tuned as it will run)."""
        from napari_sansa.core.training.options import FinetuneOptions

        return cls(FinetuneOptions.make(like=like, **keywords), validation_frames)

    @property
    def steps(self) -> int:
        return self.finetune.steps


@dataclass(frozen=True)
class HeldSource:
    """A model held in memory, as a model-cache key: it "loads" that model.

    The tuned model (``label`` 'tuned run N'), and the loaded model it started from
    (``label`` 'original'), so that going back to it never loads it again. Works with a
    cache that compares settings (``==``) and with one that keys them by ``cache_key()``.
    """

    base: object  # the ModelSource the fine-tuning started from
    label: str
    steps: int = 0
    best_step: int = 0
    model: object = field(compare=False, repr=False, hash=False, default=None)
    name: ClassVar = None  # not a registered model (a model cache asks)

    def load(self):
        return self.model

    def cache_key(self) -> str:
        return f"napari-sansa held model: {self.label} of {self.base!r} ({id(self.model)})"

    def describe(self) -> str:
        if self.label == "original":
            return f"the loaded model ({self.base.describe()})"
        run = self.label.removeprefix("tuned ")
        return f"the model fine-tuned in {run} ({self.steps} steps, best {self.best_step})"


@dataclass(frozen=True, eq=False)
class TrainingOutcome:
    """What a fine-tuning worker ended with."""

    model: object = None  # the kept model (see report), None when nothing ran
    base: object = None  # the loaded model it started from
    step: int = 0
    best_step: int = 0
    stopped: bool = False
    error: str | None = None
    report: object = None  # the run's FinetuneReport: which adapters were kept, and why


def train_steps(data: TrainingData, source, settings: TrainingSettings, cache, cancel):
    """Generator for the worker: one ``StepStats`` per step; returns a TrainingOutcome.

    ``cancel`` (Stop, or the viewer closing) is checked before every step: the run then
    ends at once with the best state so far. Nothing is written anywhere."""
    import napari_sansa as ns
    from napari_sansa.core.training import TrainingError

    try:
        with leave_a_core_for_napari(getattr(source, "threads", None)):
            base = cache.get(source)
            held_out = data.fraction(settings.validation_frames)
            run = ns.finetune_iter(
                base,
                list(data.pairs),
                replace(settings.finetune, validation=held_out),
                intensity_range=data.intensity_range,
            )
            error = None
            try:
                while not cancel.is_set():
                    try:
                        stats = next(run)
                    except StopIteration:
                        break
                    yield stats
            except TrainingError:
                error = f"{run.error}: fine-tuning stopped there"
            step = run.step
            tuned = run.result() if step > 0 else None
            best, report = run.best_step, run.outcome or run.report()
    except (ValueError, OSError, MemoryError) as exc:
        return TrainingOutcome(error=str(exc) or type(exc).__name__)
    except RuntimeError as exc:
        logger.exception("SANSA fine-tuning failed")
        return TrainingOutcome(error=f"fine-tuning failed: {type(exc).__name__}: {exc}")
    return TrainingOutcome(tuned, base, step, best, cancel.is_set(), error, report)


_SHOW = {"info": show_info, "warning": show_warning, "error": show_error}


class TrainingSession:
    """Fine-tuning runs for one viewer, beside its :class:`~.session.SansaSession`."""

    status = Signal(str)
    step = Signal(object)  # a StepStats, for each finished step
    running = Signal(bool)
    model_changed = Signal(str)  # 'original' or 'tuned'

    def __init__(self, session):
        self.session = session
        self.worker = None
        self.data: TrainingData | None = None
        self.settings: TrainingSettings | None = None
        self.history: list = []
        self.tuned: HeldSource | None = None
        self.original: HeldSource | None = None  # the loaded model the tuned one started from
        self.using = "original"
        self.message = ""
        self.alive = True
        self.outcome: TrainingOutcome | None = None
        self._cancel = threading.Event()
        self._runs = 0

    def notify(self, message: str, severity: str = "info", *, popup: bool = True) -> None:
        self.message = message
        if self.alive:
            self.status.emit(message)
            if popup:
                _SHOW[severity](message)

    def busy(self) -> bool:
        return self.worker is not None

    # -- running -------------------------------------------------------------------------
    def start(self, image, labels_layer, source, settings: TrainingSettings, frames=None):
        """Start fine-tuning on the annotated frames; returns the worker, or None (the
        reason is shown)."""
        if self.worker is not None:
            self.notify("fine-tuning is already running: wait for it, or press Stop", "warning")
            return self.worker
        if self.session.worker is not None:
            self.notify("SANSA is labelling frames: wait for the run to end, then fine-tune",
                        "warning")  # fmt: skip
            return None
        if isinstance(source, HeldSource):
            source = source.base  # a new run starts from the loaded model
        try:
            data = collect_training_frames(image, labels_layer, frames)
        except PromptError as exc:
            self.notify(str(exc), "error")
            return None
        create_worker = worker_factory(self.session)
        self.data, self.settings, self.history, self.outcome = data, settings, [], None
        self._cancel = threading.Event()
        self._source = source
        if self.original is not None and self.original.base == source:
            source = self.original  # held already: no second load
        loading = "" if self.session.models.has(source) else f"loading {source.describe()}, "
        self.notify(
            f"{loading}fine-tuning on {frames_text(data.frames)} of '{data.layer}' "
            f"({settings.steps} steps)",
            popup=False,
        )
        worker = create_worker(
            train_steps, data, source, settings, self.session.models, self._cancel,
            _progress={"total": settings.steps, "desc": f"fine-tuning on {data.image}"},
            _start_thread=False,
        )  # fmt: skip
        return start_worker(self, worker, self._on_step)

    def stop(self) -> None:
        """End the run after the step being computed; the best state so far is kept."""
        if self.worker is None or self._cancel.is_set():
            return
        self._cancel.set()
        self.notify("stopping after this step...", popup=False)

    def close(self, *_) -> None:
        """The widget went away: end the run, show nothing more."""
        self.alive = False
        self._cancel.set()

    def _on_step(self, stats) -> None:
        self.history.append(stats)
        if not self.alive:
            return
        self.step.emit(stats)
        text = f"step {stats.step} / {stats.steps}"
        if stats.loss is not None:
            text += f", loss {stats.loss:.4f}"
        if stats.val_loss is not None:
            text += f", validation {stats.val_loss:.4f} (IoU {stats.val_iou:.3f})"
        self.notify(text, popup=False)

    def _on_returned(self, outcome: TrainingOutcome) -> None:
        self.outcome = outcome

    def _on_errored(self, exc: Exception) -> None:
        self.outcome = TrainingOutcome(error=f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        outcome = self.outcome or TrainingOutcome(error="fine-tuning ended without a result")
        if not self.alive:
            return
        self.running.emit(False)
        if outcome.model is None:
            if outcome.error:  # the run's own error (after it started) changed nothing
                unchanged = "; the model is unchanged" if outcome.report is not None else ""
                self.notify(f"{outcome.error}{unchanged}", "error")
            else:
                self.notify("stopped before the first step: the model is unchanged")
            return
        report = outcome.report
        how = "stopped at" if outcome.stopped else "done:"
        head = f"fine-tuning {how} step {outcome.step}: {report}"
        if outcome.error:
            head = f"{outcome.error}; {report}"
        if report.kept == "original":  # tuning made nothing better: the model stays
            self.original = HeldSource(self._source, "original", model=outcome.base)
            now = self.tuned.describe() if self.using == "tuned" else "the loaded model"
            self.notify(f"{head}; runs still use {now}", "warning")
            return
        self._runs += 1
        self.original = HeldSource(self._source, "original", model=outcome.base)
        self.tuned = HeldSource(self._source, f"tuned run {self._runs}", outcome.step,
                                outcome.best_step, outcome.model)  # fmt: skip
        self.use("tuned", announce=False, force=True)
        text = (
            f"{head}; runs now use the tuned model ('use' switches back; 'Save adapters' "
            "writes it to a file)"
        )
        self.notify(text, "warning" if outcome.error or not report.checked else "info")

    # -- the two models --------------------------------------------------------------------
    def use(self, which: str, *, announce: bool = True, force: bool = False) -> None:
        """Runs use ``which`` model: 'tuned' (the last fine-tuned) or 'original'."""
        if which not in ("original", "tuned"):
            raise ValueError(f"which must be 'original' or 'tuned', got {which!r}")
        if which == "tuned" and self.tuned is None:
            self.notify("there is no tuned model yet: fine-tune first", "warning")
            return
        if which == self.using and not force:
            return
        self.using = which
        if self.alive:
            self.model_changed.emit(which)
        if announce:
            what = self.tuned.describe() if which == "tuned" else "the loaded model"
            self.notify(f"runs now use {what}")

    def model_source(self, panel_source):
        """The model a run uses: when the panel shows the model the fine-tuning started
        from, the tuned or the held original one, as chosen; otherwise the panel's."""
        held = self.tuned if self.using == "tuned" else self.original
        if held is not None and held.base == panel_source:
            return held
        return panel_source

    def save_adapters(self, path, *, overwrite: bool = False) -> Path | None:
        """Write the tuned model's adapters (the authors' format, atomically); returns the
        path, or None (the reason is shown). An existing file needs ``overwrite``."""
        if self.tuned is None:
            self.notify("there is no tuned model to save yet: fine-tune first", "error")
            return None
        if path is None or not str(path).strip():
            self.notify("choose a file to save the adapters in", "error")
            return None
        try:
            out = self.tuned.model.save_adapters(path, overwrite=overwrite)
        except (OSError, ValueError) as exc:
            self.notify(f"the adapters were not saved: {exc}", "error")
            return None
        out = Path(out) if out is not None else Path(path)
        self.notify(
            f"saved the tuned adapters in {out}; load them as 'adapters' under custom files "
            "(or adapter_checkpoint=...)"
        )
        return out
