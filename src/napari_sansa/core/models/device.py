"""Device and precision choice."""

from __future__ import annotations

import torch

from napari_sansa.core.errors import InvalidInputError

__all__ = ["PRECISIONS", "precision_name", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is honoured."""
    if isinstance(device, torch.device):
        dev = device
    elif device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            dev = torch.device(str(device).strip().lower())
        except RuntimeError:
            raise InvalidInputError(
                f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device {device!r} was asked for, but this PyTorch has no usable CUDA GPU; "
                "use device='cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device {device!r} (Apple MPS) is not available here")
    elif dev.type != "cpu":
        raise InvalidInputError(
            f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'"
        )
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bf16 autocast on CUDA; on the CPU bf16 where it has AMX bf16 units (see
    :mod:`napari_sansa.core.cpu_bf16`), fp32 elsewhere. ``"bf16"`` on a CPU without bf16
    arithmetic works, with a warning that it is slow there."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu":
            from napari_sansa.core.cpu_bf16 import auto_cpu_dtype

            return auto_cpu_dtype()
        return torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if device.type == "cpu":
            raise InvalidInputError("fp16 is for GPUs; on the CPU use precision='bf16' or 'fp32'")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError("this GPU does not support bf16; use precision='fp16' or 'fp32'")
    if device.type == "cpu":
        from napari_sansa.core.cpu_bf16 import warn_if_slow

        warn_if_slow()
    return torch.bfloat16


def precision_name(dtype: torch.dtype) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: the resolved name of a compute dtype."""
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names[dtype]
