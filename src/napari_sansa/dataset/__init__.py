"""Headless whole-dataset runs: folders of images and TIFF stacks in, label images out.

``segment_dataset`` (the Python form of ``napari-sansa segment``) lives in
:mod:`~napari_sansa.dataset.runner`; the modules it uses, in the order a run meets them:

- :mod:`~napari_sansa.dataset.discovery`: the targets under the inputs given;
- :mod:`~napari_sansa.dataset.references`: reference pairs and JSON prompt files;
- :mod:`~napari_sansa.dataset.locking`: one run at a time per output folder;
- :mod:`~napari_sansa.dataset.settings`: the run's options (``DatasetOptions``: the core's
  ``SegmentOptions`` and the files' own), its settings and the call into the engine;
- :mod:`~napari_sansa.dataset.records`: each output's record (is a target finished? which
  files are ours, which are stale?);
- :mod:`~napari_sansa.dataset.manifest` and :mod:`~napari_sansa.dataset.rows`: the run
  manifest and ``scores.csv``;
- :mod:`~napari_sansa.dataset.models`: the model, loaded once per process;
- :mod:`~napari_sansa.dataset.writing` and :mod:`~napari_sansa.dataset.stacks`: streaming
  targets through the model and writing outputs as they come;
- :mod:`~napari_sansa.dataset.outputs`: the output writer interface (open, write the
  frames, describe, finish) and its TIFF implementation;
- :mod:`~napari_sansa.dataset.distributed`: the same over a Dask cluster;
- :mod:`~napari_sansa.dataset.run_progress`: each finished frame and stopping a run;
  :mod:`~napari_sansa.dataset.progress`: the same, and ``segment_dataset_iter`` (the run
  as a generator);
- :mod:`~napari_sansa.dataset.io`: reading images and stacks;
- :mod:`~napari_sansa.dataset.tiffstack`: TIFF stacks frame by frame, their axes and channels;
- :mod:`~napari_sansa.dataset.finetune`: ``napari-sansa finetune`` (tuning the adapters on
  annotated files, resumably).
"""

from napari_sansa.core.models.source import ModelSource
from napari_sansa.dataset.discovery import Target, discover_targets
from napari_sansa.dataset.distributed import SchedulerLostError, WorkersLostError
from napari_sansa.dataset.outputs import DiskFullError
from napari_sansa.dataset.progress import DatasetProgress, segment_dataset_iter
from napari_sansa.dataset.references import load_prompt_file, load_reference_pair
from napari_sansa.dataset.runner import BatchReport, segment_dataset
from napari_sansa.dataset.settings import DatasetOptions

__all__ = [
    "BatchReport",
    "DatasetOptions",
    "DatasetProgress",
    "DiskFullError",
    "ModelSource",
    "SchedulerLostError",
    "Target",
    "WorkersLostError",
    "discover_targets",
    "load_prompt_file",
    "load_reference_pair",
    "segment_dataset",
    "segment_dataset_iter",
]
