"""The options of a fine-tuning run (:class:`FinetuneOptions`), checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from napari_sansa.core.errors import OptionError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE, check_input_size
from napari_sansa.core.options import made
from napari_sansa.core.training.episodes import check_prompt_setting
from napari_sansa.core.training.loss import check_dropout

__all__ = ["DEFAULT_VALIDATION", "FinetuneOptions"]

#: the fraction of frames held out when ``validation`` is not given (at least one frame
#: from three frames on, each class kept in two training frames)
DEFAULT_VALIDATION = 0.2


def _whole(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise OptionError(name, value, f"a whole number >= {low}")
    return int(value)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(name, value, "a number > 0")
    if value <= 0:
        raise OptionError(name, value, "> 0")
    return float(value)


@dataclass(frozen=True)
class FinetuneOptions:
    """How :func:`~napari_sansa.finetune` tunes the adapters, in one checked value.

    ``steps``: optimisation steps. ``lr``: the learning rate (the authors'). ``shots``:
    supports per episode are drawn from 1..shots. ``prompt``: how supports are prompted
    (``mask``, ``box``, ``point``, ``scribble``, ``multi`` or a list of kinds; held as a
    tuple). ``batch_size``: episodes per step. ``input_size``: the authors' resize (as
    :class:`~napari_sansa.SegmentOptions`). ``validation``: the fraction of frames held out
    (None: :data:`DEFAULT_VALIDATION`). ``validate_every``: steps between validations
    (None: 20 times per run). ``seed``: the run's random seed. ``dropout``: None keeps
    SAM2's. ``fresh_adapters``: start from new adapters in ``stages`` with
    ``channel_factor`` instead of the loaded ones.

    Every field is checked when the value is made (an
    :class:`~napari_sansa.core.errors.OptionError` names the option); ``validation`` and
    ``validate_every`` stay None when not given (:meth:`resolved` has them).
    :meth:`record` is its stable form, which a saved fine-tuning state records.
    """

    steps: int = 500
    lr: float = 1e-4
    shots: int = 1
    prompt: tuple | str = "mask"
    batch_size: int = 2
    input_size: int | None = DEFAULT_INPUT_SIZE
    validation: float | None = None
    validate_every: int | None = None
    seed: int = 0
    dropout: float | None = None
    fresh_adapters: bool = False
    stages: tuple = (2, 3)
    channel_factor: float = 0.3

    def __post_init__(self):
        v = self.validation
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise OptionError("validation", v, "a fraction in [0, 1)")
        every = self.validate_every
        values = {
            "steps": _whole(self.steps, "steps"),
            "lr": _positive(self.lr, "lr"),
            "shots": _whole(self.shots, "shots"),
            "prompt": check_prompt_setting(self.prompt),
            "batch_size": _whole(self.batch_size, "batch_size"),
            "input_size": check_input_size(self.input_size),
            "validation": None if v is None else float(v),
            "validate_every": None if every is None else _whole(every, "validate_every"),
            "seed": _whole(self.seed, "seed", 0),
            "dropout": check_dropout(self.dropout),
            "fresh_adapters": bool(self.fresh_adapters),
            "stages": tuple(self.stages),
            "channel_factor": float(self.channel_factor),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def make(cls, options=None, *, like=None, **keywords) -> FinetuneOptions:
        """``options`` (None, a FinetuneOptions or a mapping of its fields) with
        ``keywords`` replacing some fields. ``like``: a
        :class:`~napari_sansa.SegmentOptions` whose pre-processing (``input_size``) the
        tuning uses, unless ``keywords`` say otherwise (tuned as the model will run)."""
        if like is not None:
            keywords = {"input_size": like.input_size, **keywords}
        return made(cls, options, keywords)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The fields' names (the keywords :meth:`make` takes)."""
        return tuple(f.name for f in fields(cls))

    def resolved(self) -> FinetuneOptions:
        """The same options with ``validation`` and ``validate_every`` as the run uses them."""
        validation = DEFAULT_VALIDATION if self.validation is None else self.validation
        every = max(1, self.steps // 20) if self.validate_every is None else self.validate_every
        return replace(self, validation=validation, validate_every=every)

    def record(self) -> dict:
        """The resolved options as plain values (tuples as lists), in field order: what a
        saved fine-tuning state records and compares when it is resumed."""
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.resolved()).items()
        }
