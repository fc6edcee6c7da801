"""Which attention kernel a module's forward uses, chosen per call.

Measured on the CPU (PyTorch 2.13, 2 threads): for the memory attention's shape (one
head of 256 channels over 4096 queries and 4100 keys, the 1024-px model), forward and
backward take 2-4x longer with the fused (flash) kernel than with the math kernel,
whose matrix products use every thread; with several heads, as in Hiera's global
blocks, the fused kernel is the faster one. So training on the CPU runs the memory
attention on the math kernel whenever gradients are recorded; without gradients
(validation, inference) and on GPUs the fused kernels stay.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["KernelWhileTraining"]


class KernelWhileTraining:
    """Run ``module`` under ``backends`` while autograd records (hooks, removable)."""

    def __init__(self, module, backends=(SDPBackend.MATH,)):
        self.backends = list(backends)
        self._active = []
        self._handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._exit),
        ]

    def _enter(self, *_):
        ctx = sdpa_kernel(self.backends) if torch.is_grad_enabled() else None
        if ctx is not None:
            ctx.__enter__()
        self._active.append(ctx)

    def _exit(self, *_):
        ctx = self._active.pop()
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def remove(self):
        for h in self._handles:
            h.remove()
