"""The trainable copy of a model's network, and a model around a trained one.

Fine-tuning never touches the model it is given: it trains a copy of its SAM2 (same
weights, same adapters, or fresh adapters initialised as the authors do), held by an
:class:`~napari_sansa.core.engine.Engine` of its own, and returns a new
:class:`SansaModel` around it. This is weights code: it builds the network and reads
the source network's weights (everything else reaches the network through its engine).
"""

from __future__ import annotations

import uuid

import torch

from napari_sansa.core.engine import Engine
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.adapters import adapter_blocks, default_bottlenecks, inject_adapters
from napari_sansa.core.models.build import build_sam2

__all__ = ["trainable_copy", "wrap_model"]


def trainable_copy(model, *, fresh: bool = False, stages=(2, 3), channel_factor: float = 0.3,
                   seed: int = 0) -> Engine:  # fmt: skip
    """An engine on a new SAM2 with ``model``'s weights on ``model``'s device: its
    adapters, or fresh ones in Hiera ``stages`` (``int(block dim x channel_factor)`` wide,
    the authors' initialisation, drawn from ``seed``). Only the adapters require gradients."""
    src = model.engine.sam
    if not fresh and not adapter_blocks(src):
        raise InvalidInputError(
            "the model has no adapters (plain SAM2): start from fresh ones with "
            "fresh_adapters=True (choose stages=... and channel_factor=...), or load a model "
            "with an adapter checkpoint"
        )
    sam = build_sam2(model.config, image_size=model.image_size)
    trunk = sam.image_encoder.trunk
    state = {k: v for k, v in src.state_dict().items() if ".adapter." not in k}
    if fresh:
        try:
            stages = tuple(int(s) for s in stages)
            channel_factor = float(channel_factor)
        except (TypeError, ValueError):
            raise InvalidInputError("stages must be Hiera stage numbers (0-3) and "
                                    "channel_factor a number") from None  # fmt: skip
        n_stages = len(trunk.stage_ends)
        if not stages or any(not 0 <= s < n_stages for s in stages):
            raise InvalidInputError(
                f"stages must be Hiera stages in 0..{n_stages - 1} (the authors use 2 3), "
                f"got {list(stages)}"
            )
        if not 0 < channel_factor <= 4:
            raise InvalidInputError(f"channel_factor must be in (0, 4], got {channel_factor}")
        layout = default_bottlenecks(trunk, stages, channel_factor)
        if any(w < 1 for w in layout.values()):
            raise InvalidInputError(f"channel_factor {channel_factor} gives adapters 0 wide")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapters(sam, layout)
        result = sam.load_state_dict(state, strict=False)
        wrong = [k for k in result.missing_keys if ".adapter." not in k] + result.unexpected_keys
        if wrong:  # pragma: no cover - the same config has the same keys
            raise RuntimeError(f"the copy does not fit the model's weights: {wrong[:3]}")
    else:
        from napari_sansa.core.cpu_bf16 import fp32_adapters

        inject_adapters(sam, adapter_blocks(src))
        kept = fp32_adapters(src)  # a model held in bf16: its adapters as trained, in fp32
        sam.load_state_dict({k: kept.get(k, v) for k, v in src.state_dict().items()})
    sam = sam.to(model.device)
    for name, p in sam.named_parameters():
        p.requires_grad_(".adapter." in name)
    return Engine(sam)


def wrap_model(model, engine: Engine, name: str | None = None):
    """A :class:`SansaModel` around ``engine``'s network, with ``model``'s device,
    precision and config. bf16 on the CPU runs as a loaded model runs it
    (:mod:`napari_sansa.core.cpu_bf16`): the image encoder's weights are cast to bf16, in
    place (``engine`` is done training), not the whole model under autocast."""
    from napari_sansa.core.model import SansaModel

    sam = engine.sam
    for p in sam.parameters():
        p.requires_grad_(False)
    tuned = SansaModel(
        sam.eval(),
        config=model.config,
        device=model.device,
        dtype=model.dtype,
        identity=f"finetuned-{uuid.uuid4().hex}",
        name=name or f"{model.name}-tuned",
        settings=model.settings,  # the same cache options
    )
    if tuned.device.type == "cpu" and tuned.dtype == torch.bfloat16:  # as load_model does
        tuned.engine.hold_encoder_in_bf16()
    return tuned
