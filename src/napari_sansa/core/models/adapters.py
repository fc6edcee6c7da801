"""SANSA's AdaptFormer adapters, attached to SAM2's Hiera blocks with hooks.

An adapter runs in parallel with a Hiera block's MLP: with ``x`` the block's value
after its attention residual (the input of ``norm2``), the block computes
``x + mlp(norm2(x)) + adapter(x)``. The ``sam2`` code is left untouched: a
forward pre-hook on ``norm2`` computes ``adapter(x)``, and a forward hook on the
block adds it to the block's output, so the sum is formed in the same order as
in the authors' model. The adapter is registered as the block's ``adapter``
submodule, which gives its weights the keys the authors' checkpoints use.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

__all__ = [
    "Adapter",
    "adapter_blocks",
    "block_stages",
    "default_bottlenecks",
    "inject_adapters",
]


class Adapter(nn.Module):
    """LayerNorm -> Linear(dim -> bottleneck) -> ReLU -> Linear(bottleneck -> dim) -> x0.1."""

    def __init__(self, dim: int, bottleneck: int, scale: float = 0.1):
        super().__init__()
        self.scale = scale
        self.adapter_layer_norm_before = nn.LayerNorm(dim)
        self.down_proj = nn.Linear(dim, bottleneck)
        self.up_proj = nn.Linear(bottleneck, dim)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)  # starts as a no-op
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter_layer_norm_before(x)
        x = torch.relu(self.down_proj(x))
        return self.up_proj(x) * self.scale


class _AdapterHooks:
    """Carries ``adapter(x)`` from the block's ``norm2`` to the block's output."""

    def __init__(self, block: nn.Module):
        self._local = threading.local()
        self.handles = [
            block.norm2.register_forward_pre_hook(self._before_norm2),
            block.register_forward_hook(self._after_block),
        ]
        self._block = block

    def _before_norm2(self, _module, args):
        self._local.delta = self._block.adapter(args[0])

    def _after_block(self, _module, _args, output):
        delta = self._local.__dict__.pop("delta")
        return output + delta

    def remove(self):
        for h in self.handles:
            h.remove()


def block_stages(trunk) -> list[int]:
    """0-based Hiera stage of each block (a stage's first, pooling block is in the new stage)."""
    stages = []
    stage = 0
    for i in range(len(trunk.blocks)):
        if i > trunk.stage_ends[stage]:
            stage += 1
        stages.append(stage)
    return stages


def default_bottlenecks(trunk, stages=(2, 3), channel_factor: float = 0.3) -> dict[int, int]:
    """Adapter widths as the authors build them: ``int(block input dim x channel_factor)``."""
    per_block = block_stages(trunk)
    return {
        i: int(blk.dim * channel_factor)
        for i, blk in enumerate(trunk.blocks)
        if per_block[i] in stages
    }


def inject_adapters(sam, bottlenecks: dict[int, int]) -> None:
    """Give the image encoder's Hiera blocks ``bottlenecks`` keys an adapter each."""
    trunk = sam.image_encoder.trunk
    for i, width in sorted(bottlenecks.items()):
        block = trunk.blocks[i]
        if hasattr(block, "adapter"):
            raise RuntimeError(f"Hiera block {i} already has an adapter")
        block.adapter = Adapter(block.dim_out, int(width))
        block._sansa_adapter_hooks = _AdapterHooks(block)


def adapter_blocks(sam) -> dict[int, int]:
    """Which blocks carry adapters, and their bottleneck widths."""
    return {
        i: blk.adapter.down_proj.out_features
        for i, blk in enumerate(sam.image_encoder.trunk.blocks)
        if hasattr(blk, "adapter")
    }
