"""Fine-tuning SANSA's adapters on a user's annotated frames (SAM2 stays frozen).

``finetune`` / ``finetune_iter`` (trainer), ``Example`` and ``episode_loss`` (the
authors' episode loss, public so that it can be checked against their code).
"""

from napari_sansa.core.training.api import finetune, finetune_iter
from napari_sansa.core.training.episodes import Example
from napari_sansa.core.training.loss import episode_loss
from napari_sansa.core.training.options import FinetuneOptions
from napari_sansa.core.training.trainer import (
    FinetuneReport,
    Finetuning,
    StepStats,
    TrainingError,
)

__all__ = [
    "Example",
    "FinetuneOptions",
    "FinetuneReport",
    "Finetuning",
    "StepStats",
    "TrainingError",
    "episode_loss",
    "finetune",
    "finetune_iter",
]
