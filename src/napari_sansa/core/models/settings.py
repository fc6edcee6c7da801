"""``ModelSettings``: which model to load and how, as one small frozen value.

The one place where the model options are spelled out: :func:`load_model` takes
them as keywords, :class:`~napari_sansa.core.model.SansaModel` keeps the ones it
uses (the caches), and the napari widget, the command line and the Dask workers
pass the value itself (``ModelSource`` is the same class under its earlier name);
:func:`~napari_sansa.core.models.loading.load_settings` loads the model it describes.
Importing this module imports no torch, and it imports neither the model nor the
loader (they import it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.fingerprint import file_fingerprint

__all__ = ["ModelSettings"]


@dataclass(frozen=True)
class ModelSettings:
    """Which model to load and how: a registry ``name`` or local files, plus settings.

    * ``name``: a registered model (see :func:`napari_sansa.list_models`), fetched on
      first use unless ``download=False``; or ``config`` (may be left out when the
      SAM2 file tells its size), ``sam2_checkpoint`` and ``adapter_checkpoint``
      (without it: plain SAM2, the zero-shot baseline).
    * ``device``: ``"auto"`` (CUDA, then MPS, then CPU) or an explicit device.
      ``precision``: ``"auto"`` (bf16 on CUDA and on CPUs with AMX bf16 units, fp32
      elsewhere; see :mod:`napari_sansa.core.cpu_bf16`), ``"fp32"``, ``"bf16"``
      or ``"fp16"``. ``image_size``: the model's input side (default: the config's).
    * ``cache_bytes``: in-memory image-feature cache (0: off, and with it every other
      in-memory cache); ``cache_dir``: an optional feature cache on disk, at most
      ``cache_dir_bytes``; ``result_cache_bytes``: decoded targets per class and
      decoded references per class, so that a re-run recomputes only the classes
      whose references changed (0: off).
    * ``compile``: ``torch.compile`` the encoder, memory attention and decoder.
    * ``threads``: the CPU threads a run keeps busy (torch's, NumPy's pools, the reading
      threads; see :mod:`napari_sansa.core.threads`); None (default): the cores this
      process may use now (affinity, cgroup quota, a Dask worker's threads, the load of
      other processes). A whole number >= 1; more than the cores is allowed, with a
      warning that it will be slower.
    """

    name: str | None = None
    config: str | None = None
    sam2_checkpoint: str | None = None
    adapter_checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    image_size: int | None = None
    cache_bytes: int = 1 << 30
    cache_dir: str | None = None
    cache_dir_bytes: int = 10 << 30
    result_cache_bytes: int = 256 << 20
    compile: bool = False
    download: bool = True
    threads: int | None = None

    def __post_init__(self):
        from napari_sansa.core.threads import check_threads

        object.__setattr__(self, "threads", check_threads(self.threads))

    @classmethod
    def from_options(cls, base: ModelSettings | None = None, **options) -> ModelSettings:
        """``base`` (default: the defaults) with ``options`` replaced; an unknown option
        is refused with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown model option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(known))}"
            )
        values = asdict(base) if base is not None else {}
        values.update(options)
        return cls(**values)

    # -- describing and finding the weights ---------------------------------------------------
    # (loading them is :func:`napari_sansa.core.models.loading.load_settings`: this value
    # knows nothing of the model it describes, which is made from it)
    def describe(self) -> str:
        if self.name is not None:
            return self.name
        return f"{self.config or 'SAM2'} from {self.sam2_checkpoint}"

    def files(self) -> tuple[Path | None, Path | None]:
        """The weights files (a registered model's are fetched if missing and allowed)."""
        if self.name is not None:
            from napari_sansa.core.models.registry import get_model_spec, resolve_files

            return resolve_files(get_model_spec(self.name), download=self.download)
        return (
            Path(self.sam2_checkpoint) if self.sam2_checkpoint else None,
            Path(self.adapter_checkpoint) if self.adapter_checkpoint else None,
        )

    # -- what outputs depend on -----------------------------------------------------------
    def resolved(self) -> tuple[str, str]:
        """``(device type, precision)`` as they will be used here, e.g. ``("cuda",
        "bf16")`` for ``device="auto", precision="auto"`` on a GPU (imports torch)."""
        from napari_sansa.core.models.device import (
            precision_name,
            resolve_device,
            resolve_precision,
        )

        dev = resolve_device(self.device)
        return dev.type, precision_name(resolve_precision(self.precision, dev))

    def identity(self, files=None) -> dict:
        """What a model's outputs depend on: the weights by content (not by path), the
        config, the input size, and the device type and precision as resolved here.

        ``files``: the ``(sam2, adapters)`` weights files already found (what
        :func:`~napari_sansa.core.models.loading.load_settings` read); default
        :meth:`files`. A model loaded from these settings keeps this identity
        (:attr:`SansaModel.source_identity <napari_sansa.SansaModel.source_identity>`), so a
        dataset run resumes alike whether it is given the model or the settings."""
        from napari_sansa.core.models.build import check_config_name

        sam2, adapters = self.files() if files is None else files
        if sam2 is None:
            raise InvalidInputError("give a registered model name or a SAM2 weights file")
        for p, what in ((sam2, "SAM2 checkpoint"), (adapters, "SANSA adapter checkpoint")):
            if p is not None and Path(p).is_dir():
                from napari_sansa.core.models.checkpoints import folder_given

                raise InvalidInputError(folder_given(p, what))
            if p is not None and not Path(p).is_file():
                raise InvalidInputError(f"{what} file {p} does not exist")
        config = self.config
        if self.name is not None:
            from napari_sansa.core.models.registry import get_model_spec

            config = get_model_spec(self.name).config
        device, precision = self.resolved()
        return {
            "config": check_config_name(config) if config else None,
            "sam2": file_fingerprint(sam2),
            "adapters": file_fingerprint(adapters) if adapters else None,
            "image_size": self.image_size,
            "device": device,
            "precision": precision,
        }

    def cache_key(self) -> str:
        """Two settings with the same key load interchangeable models: the
        :meth:`identity` plus the options that change the loaded object (caches,
        compilation)."""
        extra = {
            "cache_bytes": self.cache_bytes,
            "cache_dir": str(Path(self.cache_dir).expanduser().resolve())
            if self.cache_dir
            else None,
            "cache_dir_bytes": self.cache_dir_bytes,
            "result_cache_bytes": self.result_cache_bytes,
            "compile": bool(self.compile),
        }
        return json.dumps({**self.identity(), **extra}, sort_keys=True)
