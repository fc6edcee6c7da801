"""Dropout noise for training on the CPU, drawn on every core.

PyTorch's CPU ``bernoulli_`` (what its dropout and the math attention kernel draw with)
runs on one core: at 1024 px the memory attention's four layers draw about 134 million
numbers a step (their ``[4096, 4096]`` attention weights and their activations), which
took about 1 s of an 8 s step on two cores. :func:`keep_noise` draws the same
distribution (each element kept with probability ``1 - p``, independently; kept ones
scaled by ``1 / (1 - p)``) with NumPy's PCG64 generator in chunks of fixed size, the
chunks spread over a thread pool as wide as PyTorch's intra-op threads (NumPy drops the
GIL while it fills an array).

The numbers are repeatable: each call takes one 63-bit seed from PyTorch's default
generator (so ``torch.manual_seed``, ``torch.random.fork_rng`` and a fine-tuning run's
saved random state govern it, as they govern PyTorch's own dropout), and chunk ``i`` is
drawn from ``SeedSequence(seed).spawn(n)[i]``: the same seed gives the same noise
whatever the number of threads. They are not PyTorch's numbers, so a run's dropout
masks differ from the ones PyTorch's kernels would have drawn from the same seed; the
masks' distribution is the same.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["dropout", "keep_noise"]

CHUNK = 1 << 20  # elements per generator (4 MiB of float32)

_pools: dict[int, ThreadPoolExecutor] = {}  # one per width, kept: another thread may be using one
_pools_lock = threading.Lock()


def _executor(width: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if width not in _pools:
            _pools[width] = ThreadPoolExecutor(width, thread_name_prefix="sansa-dropout")
        return _pools[width]


def _forget_pools() -> None:
    """In a forked child: the parent's pool threads are not there (their pools would hang)."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pools)


def _seed() -> int:
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def keep_noise(shape, p: float, *, seed: int | None = None, out=None) -> torch.Tensor:
    """A float32 CPU tensor of ``shape``: ``1 / (1 - p)`` where an element is kept
    (probability ``1 - p``), 0 where it is dropped. ``seed`` None: one draw from
    PyTorch's default generator. ``out``: a contiguous float32 CPU tensor of at least
    that many elements to write into (the result is a view of it)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    seed = _seed() if seed is None else int(seed)
    n = math.prod(shape)
    if out is None:
        target = torch.from_numpy(np.empty(n, np.float32))
    else:
        if out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError("out must be a contiguous float32 CPU tensor")
        if out.numel() < n:
            raise ValueError(f"out holds {out.numel()} elements, the noise needs {n}")
        target = out.view(-1)[:n]
    out = target.numpy()
    starts = range(0, n, CHUNK)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    threshold, scale = np.float32(p), np.float32(1.0 / (1.0 - p))

    def fill(i: int) -> None:
        part = out[starts[i] : starts[i] + CHUNK]
        np.random.Generator(np.random.PCG64(seeds[i])).random(dtype=np.float32, out=part)
        np.greater_equal(part, threshold, out=part)  # 1.0 kept, 0.0 dropped
        part *= scale

    width = min(torch.get_num_threads(), len(starts))
    if width > 1:
        list(_executor(width).map(fill, range(len(starts))))
    else:
        for i in range(len(starts)):
            fill(i)
    return target.view(tuple(shape))


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` times :func:`keep_noise` of its shape (training-mode dropout)."""
    if p == 0:
        return x
    return x * keep_noise(x.shape, p)
