"""``ModelSource``: which model to load, as a small frozen value (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError

__all__ = ["ModelSource"]


@dataclass(frozen=True)
class ModelSource:
    """Which model to load and how: a registry ``name`` or local files, plus settings.

    A small frozen value that crosses threads and processes (the napari widget's
    worker, Dask workers) and is compared to tell whether a loaded model can be
    reused.
    """

    name: str | None = None
    config: str | None = None
    sam2_checkpoint: str | None = None
    adapter_checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    image_size: int | None = None
    cache_bytes: int = 1 << 30

    def load(self):
        """A new :class:`~napari_sansa.core.model.SansaModel` (imports torch)."""
        from napari_sansa.core.models.loading import load_model

        return load_model(
            self.name,
            config=self.config,
            sam2_checkpoint=self.sam2_checkpoint,
            adapter_checkpoint=self.adapter_checkpoint,
            device=self.device,
            precision=self.precision,
            image_size=self.image_size,
            cache_bytes=self.cache_bytes,
        )

    def describe(self) -> str:
        if self.name is not None:
            return self.name
        return f"{self.config or 'SAM2'} from {self.sam2_checkpoint}"

    def files(self) -> tuple[Path | None, Path | None]:
        """The weights files (a registered model's are fetched if missing)."""
        if self.name is not None:
            from napari_sansa.core.models.registry import get_model_spec, resolve_files

            return resolve_files(get_model_spec(self.name))
        return (
            Path(self.sam2_checkpoint) if self.sam2_checkpoint else None,
            Path(self.adapter_checkpoint) if self.adapter_checkpoint else None,
        )

    def identity(self) -> dict:
        """What a model's outputs depend on, by file content (not by path)."""
        from napari_sansa.core.models.build import check_config_name
        from napari_sansa.core.models.loading import file_fingerprint

        sam2, adapters = self.files()
        if sam2 is None:
            raise InvalidInputError("give a registered model name or a SAM2 weights file")
        for p in (sam2, adapters):
            if p is not None and not Path(p).is_file():
                raise InvalidInputError(f"{p} does not exist")
        config = self.config
        if self.name is not None:
            from napari_sansa.core.models.registry import get_model_spec

            config = get_model_spec(self.name).config
        return {
            "config": check_config_name(config) if config else None,
            "sam2": file_fingerprint(sam2),
            "adapters": file_fingerprint(adapters) if adapters else None,
            "image_size": self.image_size,
            "precision": self.precision,
        }
