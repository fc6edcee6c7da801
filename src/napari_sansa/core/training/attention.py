"""Which attention kernel a module's forward uses while training, chosen per call.

Measured on the CPU (PyTorch 2.13, 2 threads): PyTorch's fused (flash) CPU kernel has no
dropout, and for the memory attention's shape (one head of 256 channels over 4096
queries and 4100 keys, the 1024-px model) its backward takes ten times longer than the
math kernel's; for Hiera's blocks and the mask decoder (several heads, no dropout) the
fused kernel is the faster one (forward plus backward) and stays. So training on the CPU
runs the memory attention through :class:`MathAttention`: the math kernel's operations
with less kept and less work, its dropout noise drawn on every core
(:mod:`.dropout`; the memory attention's dropout layers draw theirs there too). One
attention at 1024 px takes 238 ms forward and backward (2 threads), 180 ms of it its six
matrix products; the math kernel's own steps with PyTorch's ``bernoulli_`` took 280 ms.
Without gradients (validation, inference) and on GPUs the fused kernels and
PyTorch's dropout stay.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from napari_sansa.core.training.dropout import dropout, keep_noise

__all__ = ["KernelWhileTraining", "MathAttention", "MathAttentionWhileTraining", "Scratch"]


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


class Scratch:
    """One reusable float32 buffer: a large tensor made afresh costs its page faults
    (about 14 ms for the memory attention's 67 MB weights at 1024 px, longer than its
    softmax), so the dropout noise and the backward pass's ``grad @ v^T`` are written
    into this one, which lives as long as its owner."""

    def __init__(self):
        self._buf = torch.empty(0)

    def get(self, shape) -> torch.Tensor:
        n = math.prod(shape)
        if self._buf.numel() < n:
            self._buf = torch.empty(0)  # let the old one go before the new one is made
            self._buf = torch.empty(n, dtype=torch.float32)
        return self._buf[:n].view(tuple(shape))

    def clear(self) -> None:
        self._buf = torch.empty(0)


class MathAttention(torch.autograd.Function):
    """``softmax(q k^T * scale)`` with dropout, then ``@ v``: the math kernel's maths.

    As the math kernel: ``q`` and ``k`` are each scaled by ``sqrt(scale)`` before their
    product, and the kept weights are divided by ``1 - p``. The dropout noise comes from
    :func:`~napari_sansa.core.training.dropout.keep_noise` (the same distribution as the
    math kernel's ``bernoulli_``, drawn on every core). Kept for the backward pass: the
    softmax output (computed in place over the scores) and the dropped weights (the math
    kernel keeps those two and the noise). The backward pass is the softmax's own: with
    ``G = grad @ v^T``, the gradient of the scores is ``dropped * G - attn * rowsum(grad
    * out)`` (the row sum of ``attn * noise * G`` is that of ``grad * out``), one pass
    over ``[L, S]`` fewer than remaking the dropped weights and calling the softmax
    backward. ``scratch`` (a :class:`Scratch`, optional) holds the noise and ``G``.
    """

    @staticmethod
    def forward(ctx, q, k, v, dropout_p: float, scale: float, scratch=None, generator=None):
        root = math.sqrt(scale)
        qs, ks = q * root, k * root
        attn = torch.matmul(qs, ks.transpose(-2, -1))
        torch.ops.aten._softmax.out(attn, -1, False, out=attn)  # in place, row by row
        dropped = attn
        if dropout_p > 0:
            buf = scratch.get(attn.shape) if scratch is not None else None
            noise = keep_noise(attn.shape, dropout_p, generator=generator, out=buf)
            dropped = torch.mul(attn, noise)
        out = torch.matmul(dropped, v)
        ctx.save_for_backward(qs, ks, v, attn, dropped if dropout_p > 0 else None, out)
        ctx.root, ctx.scratch = root, scratch
        return out

    @staticmethod
    def backward(ctx, grad):
        qs, ks, v, attn, dropped, out = ctx.saved_tensors
        dropped = attn if dropped is None else dropped
        dv = None
        if ctx.needs_input_grad[2]:
            dv = torch.matmul(dropped.transpose(-2, -1), grad)
        dq = dk = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            vt = v.transpose(-2, -1)
            if ctx.scratch is not None and grad.dim() == vt.dim():
                d = torch.matmul(grad, vt, out=ctx.scratch.get(attn.shape))
            else:
                d = torch.matmul(grad, vt)
            d.mul_(dropped).addcmul_(attn, (grad * out).sum(-1, keepdim=True), value=-1)
            if ctx.needs_input_grad[0]:
                dq = torch.matmul(d, ks).mul_(ctx.root)
            if ctx.needs_input_grad[1]:
                dk = torch.matmul(d.transpose(-2, -1), qs).mul_(ctx.root)
        return dq, dk, dv, None, None, None, None


def _plain_call(args, kwargs):
    """``(q, k, v, dropout_p, scale)`` of an SDPA call that :class:`MathAttention` does
    exactly (no mask, not causal, no grouped heads, float32 on the CPU, dropout_p < 1),
    else None."""
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
    p = float(call.get("dropout_p", 0.0))
    if p >= 1:  # every weight dropped: the math kernel's zeros (keep_noise refuses p = 1)
        return None
    scale = call.get("scale")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return q, k, v, p, scale


def _plain_dropout(args, kwargs):
    """``(x, p)`` of an ``F.dropout`` call that :func:`dropout` does (training, not in
    place, float32 on the CPU), else None."""
    call = dict(zip(("input", "p", "training", "inplace"), args, strict=False)) | kwargs
    x, p = call.get("input"), call.get("p", 0.5)
    plain = (
        set(call) <= {"input", "p", "training", "inplace"}
        and call.get("training", True)
        and not call.get("inplace", False)
        and isinstance(x, torch.Tensor)
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and isinstance(p, (int, float))
        and 0 <= p < 1
    )
    return (x, float(p)) if plain else None


class _Mode(TorchFunctionMode):
    def __init__(self, scratch: Scratch | None = None, generator=None):
        super().__init__()
        self.scratch = scratch
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            call = _plain_dropout(args, kwargs)
            if call is not None:
                return dropout(*call, generator=self.generator)
            return func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            call = _plain_call(args, kwargs)
            if call is not None:
                return MathAttention.apply(*call, self.scratch, self.generator)
            with sdpa_kernel([SDPBackend.MATH]):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


class MathAttentionWhileTraining(_Hooks):
    """``module``'s attention calls go through :class:`MathAttention` while autograd
    records (others, e.g. with a mask, through the math kernel), and its dropout layers
    through :func:`~napari_sansa.core.training.dropout.dropout`; their noise is seeded
    from ``generator`` (a CPU ``torch.Generator``; None: PyTorch's default one)."""

    def __init__(self, module, generator=None):
        self.scratch = Scratch()
        self.generator = generator
        super().__init__(module)

    def context(self):
        return _Mode(self.scratch, self.generator)

    def remove(self):
        super().remove()
        self.scratch.clear()
        self.generator = None  # nothing of ``module`` draws from it any more
