"""Random weights in the official file formats, for tests, benchmarks and parity checks.

No pretrained weights are needed to exercise the real architecture and loaders:
these helpers write Meta-format SAM2 files and authors-format adapter files with
random values. Parameters that SAM2 or the adapters initialise to a constant
(zeros, ones, tiny layer scales, the adapters' zero up-projections) get random
values too, so that a mistake in how they are used cannot hide behind a zero.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_sansa.core.models.adapters import default_bottlenecks, inject_adapters
from napari_sansa.core.models.build import build_sam2
from napari_sansa.core.models.checkpoints import save_adapter_checkpoint, save_sam2_checkpoint

__all__ = ["randomize_", "write_random_checkpoints"]


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give every constant floating-point parameter of ``module`` random values in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if not p.is_floating_point() or p.numel() == 0:
                continue
            flat = p.detach().reshape(-1)
            if bool((flat == flat[0]).all()):
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale
                p.copy_(p + noise)


def write_random_checkpoints(
    folder,
    config: str = "sam2_hiera_t",
    *,
    image_size: int | None = None,
    stages=(2, 3),
    channel_factor: float = 0.3,
    seed: int = 0,
    adapters: bool = True,
    logit_gain: float = 30.0,
) -> tuple[Path, Path | None]:
    """Write ``sam2.pt`` (Meta's format, object-score heads included) and
    ``adapters.pth`` (the authors' format) with random weights into ``folder``.

    ``logit_gain`` scales the mask decoder's last hypernetwork layers, so that
    random models give logits of about +-10 like trained ones (with default
    initialisation they stay within +-0.3, where every pixel is a coin toss).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    meta = build_sam2(config, image_size=image_size, sansa=False)
    randomize_(meta, seed)
    with torch.no_grad():
        for mlp in meta.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(logit_gain)
            mlp.layers[-1].bias.mul_(logit_gain)
    sam2_path = save_sam2_checkpoint(meta.state_dict(), folder / "sam2.pt")
    if not adapters:
        return sam2_path, None
    model = build_sam2(config, image_size=image_size)
    inject_adapters(model, default_bottlenecks(model.image_encoder.trunk, stages, channel_factor))
    torch.manual_seed(seed + 1)
    for blk in model.image_encoder.trunk.blocks:
        if hasattr(blk, "adapter"):
            for lin in (blk.adapter.down_proj, blk.adapter.up_proj):
                torch.nn.init.normal_(lin.weight, std=1.0 / lin.in_features**0.5)
    randomize_(model, seed + 2)
    return sam2_path, save_adapter_checkpoint(model, folder / "adapters.pth")
