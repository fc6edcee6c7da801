"""Does a training step fit in the GPU's memory? Found out before the run starts.

On CUDA, one probe episode with the most supports a step can draw runs forward and
backward before the first step (its gradients are thrown away, the run's random
streams are not touched). If it does not fit, or leaves no room, the run stops at once
with a message that says what to make smaller; what is left after the probe bounds
the on-device cache of frozen encoder outputs. On other devices nothing is checked.
"""

from __future__ import annotations

import math

import torch

from napari_sansa.core.errors import DeviceMemoryError

__all__ = ["cache_budget", "probe_step_memory"]

HEADROOM = 0.9  # of the free memory a run may plan to use


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def cache_budget(peak: float, free: int, cache_bytes: int, *, shots: int, image_size: int,
                 device) -> int:  # fmt: skip
    """The cache bytes left once a step's ``peak`` fits in ``free``; raises if it does not.

    ``peak`` is ``math.inf`` when the probe ran out of memory."""
    room = HEADROOM * free - peak
    if room < 0:
        seen = "more than the free memory" if math.isinf(peak) else f"about {_gib(peak)}"
        raise DeviceMemoryError(
            f"a fine-tuning step with {shots} support(s) at the model's {image_size} px input "
            f"needs {seen}, and {device} has {_gib(free)} free: use fewer shots, a model loaded "
            "with a smaller input (load_model(..., image_size=512)), precision='bf16', a "
            "smaller SAM2, or device='cpu'"
        )
    return int(min(cache_bytes, room))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def probe_step_memory(run_episode, device) -> float:
    """Peak bytes of ``run_episode()`` (forward and backward of the largest episode) on
    CUDA, ``math.inf`` if it ran out of memory."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        run_episode()
    except Exception as exc:
        if not _is_oom(exc):
            raise
        del exc
        torch.cuda.empty_cache()
        return math.inf
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - base)
