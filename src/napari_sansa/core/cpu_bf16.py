"""bf16 on the CPU: which CPUs have bf16 matrix units, and the model parts held in bf16.

``precision="auto"`` on the CPU asks :func:`auto_cpu_dtype`: bf16 where the CPU has AMX
tiles for bf16 (lscpu/``/proc/cpuinfo`` flag ``amx_bf16``, Intel Xeon since Sapphire
Rapids), where a matrix product runs 7-8x faster in bf16 than in fp32; fp32 elsewhere,
including CPUs with only the AVX-512 bf16 dot product (``avx512_bf16``: AMD Zen 4/5,
Intel Cooper Lake), where bf16 pays less and changes the results (see docs/speed.md for
the figures this rule rests on; ``precision="bf16"`` takes it there too). Without
either, bf16 is emulated and slow: ``precision="bf16"`` still works, with a warning.

On the CPU, bf16 does not run the whole model under autocast (a cast per operation,
which made Hiera-tiny's encoder slower than fp32 on an AMX machine). Each part runs as
``benchmarks/bench_flops.py`` measured it to pay:

* the image encoder (Hiera trunk with its adapters, FPN neck), most of the FLOPs: its
  weights cast to bf16 once, at load (:func:`hold_in_bf16`), the images cast once, autocast
  off (its attention is the fused ``scaled_dot_product_attention`` in bf16);
* memory attention and memory encoder: fp32 weights under autocast, as before (on an
  avx512_bf16 CPU autocast ran memory attention 1.3-1.7x faster than fp32, its weights
  in bf16 1.05-1.5x: no clear gain);
* prompt encoder and mask decoder: fp32, autocast off (autocast ran them at 0.75-1.2x of
  fp32, 2-3 % of a target's time; in fp32 the logits and the upscaling of masks are
  computed as in fp32 runs, and 99.85 % instead of 99.48 % of label pixels agree with fp32
  on the test model).
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from napari_sansa.core.errors import InvalidInputError

__all__ = [
    "AUTO_BF16_ENV",
    "auto_cpu_dtype",
    "cpu_bf16_units",
    "cpu_flags",
    "hold_in_bf16",
    "warn_if_slow",
]

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")

#: ``NAPARI_SANSA_CPU_BF16=0`` keeps ``precision="auto"`` in fp32 on this machine's CPU,
#: AMX or not: the same results on every machine of a cluster of mixed CPUs, or as an
#: fp32 run. Unset (or empty): the rule below. Child processes (Dask workers started
#: here, a CLI run from a script) inherit it.
AUTO_BF16_ENV = "NAPARI_SANSA_CPU_BF16"


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU's feature flags as ``lscpu`` shows them (empty where ``/proc/cpuinfo``
    cannot be read, e.g. on macOS or Windows)."""
    return _read_flags(CPUINFO if cpuinfo is None else Path(cpuinfo))


@lru_cache(maxsize=4)
def _read_flags(path: Path) -> frozenset[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _mkldnn_bf16() -> bool:
    """Whether PyTorch's oneDNN has bf16 kernels for this CPU (it checks the
    instruction set itself)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None:
        return False
    try:
        return bool(check())
    except RuntimeError:
        return False


def cpu_bf16_units(flags: frozenset[str] | None = None, mkldnn: bool | None = None) -> str | None:
    """``"amx"`` (AMX bf16 tiles), ``"avx512_bf16"`` (the AVX-512 bf16 dot product) or
    None (no bf16 arithmetic in hardware, or a PyTorch whose oneDNN cannot use it)."""
    flags = cpu_flags() if flags is None else flags
    mkldnn = _mkldnn_bf16() if mkldnn is None else mkldnn
    if not mkldnn:
        return None
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


_said: set = set()


def auto_cpu_dtype(units: str | None | object = ...) -> torch.dtype:
    """What ``precision="auto"`` runs on the CPU: bf16 with AMX, fp32 otherwise
    (``units``: default this machine's, :func:`cpu_bf16_units`, and then fp32 whatever
    they are when :data:`AUTO_BF16_ENV` is ``0``). The choice is logged at INFO, once per
    process."""
    off = False
    if units is ...:
        off = _auto_bf16_off()
        units = cpu_bf16_units()
    dtype = torch.bfloat16 if units == "amx" and not off else torch.float32
    if (units, dtype, off) not in _said:
        _said.add((units, dtype, off))
        if off:
            why = f"{AUTO_BF16_ENV}=0"
        elif dtype == torch.bfloat16:
            why = "this CPU has AMX bf16 matrix units"
        elif units == "avx512_bf16":
            why = (
                "this CPU has avx512_bf16 but no AMX: bf16 gains less there and changes "
                "results; precision='bf16' takes it anyway"
            )
        else:
            why = "this CPU has no bf16 matrix units"
        log.info("precision='auto' on the CPU: %s (%s)", _name(dtype), why)
    return dtype


def _auto_bf16_off() -> bool:
    """Whether :data:`AUTO_BF16_ENV` turns bf16 off for ``precision="auto"``."""
    value = os.environ.get(AUTO_BF16_ENV, "").strip()
    if value in ("", "0"):
        return value == "0"
    raise InvalidInputError(
        f"the environment variable {AUTO_BF16_ENV} is {value!r}: set it to 0 (precision "
        "'auto' stays fp32 on the CPU) or unset it (bf16 where the CPU has AMX)"
    )


def warn_if_slow(units: str | None | object = ...) -> None:
    """A warning that bf16 is slow here, on a CPU without bf16 arithmetic."""
    units = cpu_bf16_units() if units is ... else units
    if units is None:
        warnings.warn(
            "precision='bf16' on a CPU without bf16 arithmetic (no amx_bf16 or avx512_bf16 "
            "flag): it works, but is emulated and usually slower than fp32 here; use "
            "precision='fp32' or 'auto'",
            UserWarning,
            stacklevel=3,
        )


def hold_in_bf16(sam) -> None:
    """Cast the image encoder's weights (trunk with its adapters, and neck) to bf16, in
    place: what :meth:`Engine.encode <napari_sansa.core.engine.Engine.encode>` runs
    natively in bf16 on the CPU. The adapters' fp32 values are kept aside first
    (:func:`fp32_adapters`): saving the adapters of a fine-tuned model writes what
    training made, not its bf16 rounding."""
    kept = {n: p.detach().float().clone() for n, p in sam.named_parameters() if ".adapter." in n}
    sam.image_encoder.to(torch.bfloat16)
    sam.fp32_adapters = kept  # a plain attribute: not in the state dict, not a parameter


def fp32_adapters(sam) -> dict:
    """``{parameter name: fp32 tensor}`` of the adapters as they were before
    :func:`hold_in_bf16` cast them ({} when it did not)."""
    return getattr(sam, "fp32_adapters", None) or {}


def _name(dtype: torch.dtype) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"
