"""Which attention kernel a module's forward uses while training, chosen per call.

Measured on the CPU (PyTorch 2.13, 2 threads): PyTorch's fused (flash) CPU kernel has no
dropout, and for the memory attention's shape (one head of 256 channels over 4096
queries and 4100 keys, the 1024-px model) its backward takes ten times longer than the
math kernel's; for Hiera's blocks and the mask decoder (several heads, no dropout) the
fused kernel is the faster one (forward plus backward) and stays. So training on the CPU
runs the memory attention through :class:`MathAttention`: the math kernel's own
operations and random draws (so the same values, and the same dropout masks from the
same generator state), with less kept for the backward pass and less work: the
math kernel's autograd graph holds three ``[L, S]`` tensors per attention (the softmax
output, the dropout noise and the dropped weights), this one the first two (the
dropped weights are remade in the backward pass), and its softmax skips the math
kernel's check for rows that are all masked (there is no mask here). Without
gradients (validation, inference) and on GPUs the fused kernels stay.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

__all__ = ["KernelWhileTraining", "MathAttention", "MathAttentionWhileTraining"]


class _Hooks:
    """Enter a context before ``module``'s forward and leave it after (removable)."""

    def __init__(self, module):
        self._active = []
        self._handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._exit),
        ]

    def context(self):  # pragma: no cover - each subclass says
        raise NotImplementedError

    def _enter(self, *_):
        ctx = self.context() if torch.is_grad_enabled() else None
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


class KernelWhileTraining(_Hooks):
    """Run ``module`` under the SDPA ``backends`` while autograd records."""

    def __init__(self, module, backends=(SDPBackend.MATH,)):
        self.backends = list(backends)
        super().__init__(module)

    def context(self):
        return sdpa_kernel(self.backends)


class MathAttention(torch.autograd.Function):
    """``softmax(q k^T * scale)`` with dropout, then ``@ v``: the math kernel's steps.

    As the math kernel: ``q`` and ``k`` are each scaled by ``sqrt(scale)`` before their
    product, the dropout noise is drawn with ``bernoulli_(1 - p)`` on a tensor of the
    weights' shape and the kept weights are divided by ``1 - p``.
    """

    @staticmethod
    def forward(ctx, q, k, v, dropout_p: float, scale: float):
        root = math.sqrt(scale)
        qs, ks = q * root, k * root
        attn = torch.softmax(torch.matmul(qs, ks.transpose(-2, -1)), dim=-1)
        noise = None
        if dropout_p > 0:
            noise = torch.empty_like(attn).bernoulli_(1 - dropout_p).div_(1 - dropout_p)
            out = torch.matmul(attn * noise, v)
        else:
            out = torch.matmul(attn, v)
        ctx.save_for_backward(qs, ks, v, attn, noise)
        ctx.root = root
        return out

    @staticmethod
    def backward(ctx, grad):
        qs, ks, v, attn, noise = ctx.saved_tensors
        dv = None
        if ctx.needs_input_grad[2]:
            dropped = attn if noise is None else attn * noise
            dv = torch.matmul(dropped.transpose(-2, -1), grad)
            del dropped
        dq = dk = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            d = torch.matmul(grad, v.transpose(-2, -1))
            if noise is not None:
                d.mul_(noise)
            d = torch.ops.aten._softmax_backward_data(d, attn, -1, attn.dtype)
            if ctx.needs_input_grad[0]:
                dq = torch.matmul(d, ks).mul_(ctx.root)
            if ctx.needs_input_grad[1]:
                dk = torch.matmul(d.transpose(-2, -1), qs).mul_(ctx.root)
        return dq, dk, dv, None, None


def _plain_call(args, kwargs):
    """``(q, k, v, dropout_p, scale)`` of an SDPA call that :class:`MathAttention` does
    exactly (no mask, not causal, no grouped heads, float32 on the CPU), else None."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    call = dict(zip(names, args, strict=False)) | kwargs
    if set(call) - set(names) or any(n not in call for n in names[:3]):
        return None
    q, k, v = call["query"], call["key"], call["value"]
    plain = (
        call.get("attn_mask") is None
        and not call.get("is_causal", False)
        and not call.get("enable_gqa", False)
        and all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in (q, k, v))
        and all(t.device.type == "cpu" and t.dim() == 4 for t in (q, k, v))
        and q.shape[:2] == k.shape[:2] == v.shape[:2]
    )
    if not plain:
        return None
    scale = call.get("scale")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return q, k, v, float(call.get("dropout_p", 0.0)), scale


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            call = _plain_call(args, kwargs)
            if call is not None:
                return MathAttention.apply(*call)
            with sdpa_kernel([SDPBackend.MATH]):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


class MathAttentionWhileTraining(_Hooks):
    """``module``'s attention calls go through :class:`MathAttention` while autograd
    records (others, e.g. with a mask, through the math kernel)."""

    def context(self):
        return _Mode()
