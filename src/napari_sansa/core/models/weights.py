"""A model's adapter weights: their parameters, named as in the authors' checkpoint, and
saving them (what :class:`~napari_sansa.core.engine.Engine` offers the model and
fine-tuning)."""

from __future__ import annotations

import errno
from pathlib import Path

import torch

from napari_sansa.core.atomic import atomic_write
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.adapters import adapter_blocks
from napari_sansa.core.models.checkpoints import save_adapter_checkpoint

__all__ = ["PREFIX", "adapter_parameters", "save_adapters"]

PREFIX = "sam."  # the authors' checkpoints name the model's SAM2 ``sam``


def adapter_parameters(sam) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every adapter tensor, named as in the authors' checkpoint."""
    return [(PREFIX + n, p) for n, p in sam.named_parameters() if ".adapter." in n]


def save_adapters(engine, path, *, overwrite: bool = False) -> Path:
    """Write the adapters of ``engine``'s network in the authors' format, atomically (a
    failure leaves any earlier file at ``path`` as it was)."""
    path = Path(path).expanduser()
    if not adapter_blocks(engine.sam):
        raise InvalidInputError("the model has no adapters to save (it is plain SAM2)")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give the path of the .pth file to write")
    if path.exists() and not overwrite:
        raise InvalidInputError(
            f"{path} already exists; choose another name or pass overwrite=True (--overwrite)"
        )
    try:
        with atomic_write(path) as tmp:
            save_adapter_checkpoint(engine.sam, tmp)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        said = f"no space left on the device while saving the adapters to {path}; any "
        said += "earlier file there is intact: free some space and save again"
        raise OSError(errno.ENOSPC, said) from None
    return path
