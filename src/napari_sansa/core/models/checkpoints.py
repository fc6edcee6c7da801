"""Read and check weights files: Meta's SAM2 checkpoints and the SANSA adapters.

File formats (see docs/models.md):

* SAM2 (Meta): ``torch.load(path)["model"]`` is a state dict with unprefixed keys
  (``image_encoder.trunk.blocks.0.attn.qkv.weight``). It holds object-score
  parameters that SANSA's model does not have; exactly those are ignored.
* SANSA adapters (the authors'): ``torch.load(path)["model"]`` holds only adapter
  tensors, ``sam.image_encoder.trunk.blocks.{i}.adapter.{adapter_layer_norm_before|
  down_proj|up_proj}.{weight|bias}``. Which blocks carry adapters, and their widths,
  are read from the tensors' shapes.

Every check runs before any weight is copied into a model, so a file that does not
fit never leaves a half-loaded model behind.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

from napari_sansa.core.errors import CheckpointError, ModelNotFoundError

__all__ = [
    "adapter_layout",
    "check_finite",
    "check_sam2_state_dict",
    "folder_given",
    "guess_config",
    "is_object_score_key",
    "read_checkpoint",
    "save_adapter_checkpoint",
    "save_sam2_checkpoint",
]

ADAPTER_KEY = re.compile(
    r"^sam\.image_encoder\.trunk\.blocks\.(\d+)\.adapter\."
    r"(adapter_layer_norm_before|down_proj|up_proj)\.(weight|bias)$"
)
_ADAPTER_PARTS = {
    f"{m}.{p}"
    for m in ("adapter_layer_norm_before", "down_proj", "up_proj")
    for p in ("weight", "bias")
}
#: the dtypes a weight may have (float8 and other exotic ones are refused, as are
#: integer, boolean and complex tensors)
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_OBJECT_SCORE_KEYS = {"no_obj_ptr", "sam_mask_decoder.obj_score_token.weight"}
# Hiera blocks per SAM2 size, to name the size a mismatched file belongs to.
_SIZE_BY_BLOCKS = {12: "t", 16: "s", 24: "b+", 48: "l"}


def is_object_score_key(key: str) -> bool:
    """Object-score parameters of Meta's checkpoints that SANSA's SAM2 does not use."""
    return key in _OBJECT_SCORE_KEYS or key.startswith("sam_mask_decoder.pred_obj_score_head.")


def folder_given(path, what: str = "checkpoint") -> str:
    """The message for a weights path that is a folder: what to give, and what it holds."""
    path = Path(path)
    try:
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".pt", ".pth"))
    except OSError:
        inside = []
    found = f" (it holds {_listing(inside, 3)})" if inside else ""
    return (
        f"{what} {path} is a folder, not a weights file: give the path of the .pt/.pth "
        f"file itself{found}"
    )


def read_checkpoint(path, what: str = "checkpoint") -> dict:
    """Load ``torch.load(path)["model"]`` safely (tensors only), with clear errors."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(folder_given(path, what))
    if not path.exists():
        raise ModelNotFoundError(f"{what} file {path} does not exist")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(
            f"{what} {path} cannot be read ({exc.strerror or exc}): make it readable by this "
            "user (e.g. chmod a+r), or copy it to a folder you can read and give that path"
        ) from None
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): download it again")
    is_zip = head == b"PK\x03\x04"
    if is_zip:
        _check_zip(path, what, size)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        if not is_zip and head[:1] != b"\x80":  # neither torch.save's zip nor its pickle
            raise CheckpointError(
                f"{what} {path} is not a PyTorch checkpoint: it does not begin like a file "
                "written by torch.save (weights come as .pt/.pth files); give the path of the "
                "weights file, or download or copy it again if it is damaged"
            ) from None
        if not isinstance(exc, pickle.UnpicklingError):
            if is_zip:  # torch's words name the records inside the file: chained only
                raise CheckpointError(
                    f"{what} {path} is truncated or damaged: PyTorch cannot read it. {AGAIN}"
                ) from exc
            raise CheckpointError(
                f"{what} {path} is not a PyTorch checkpoint ({type(exc).__name__}: "
                f"{str(exc)[:120]}): give the path of the weights file. {AGAIN}"
            ) from None
        text = str(exc)
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"{what} {path} contains Python objects other than tensors and settings, "
                "which napari-sansa does not unpickle for safety; re-save it as "
                "torch.save({'model': state_dict}, path)"
            ) from None
        raise CheckpointError(f"{what} {path} is not a PyTorch checkpoint ({text[:80]})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{what} {path} has no 'model' entry (found {keys}); SAM2 and SANSA checkpoints "
            "store their weights under 'model'"
        )
    state = obj["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {path}: its 'model' entry is not a dict of tensors")
    for name in sorted(state):  # float8 and the like: no weights of ours, and no isfinite
        tensor = state[name]
        if tensor.is_floating_point() and tensor.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{what} {path} is not usable: its tensor {name} holds "
                f"{_dtype_name(tensor.dtype)} values, but weights are float32, float16, "
                "bfloat16 or float64; the file was written wrongly: export it again in one "
                "of those"
            )
    check_finite(state, path, what)
    return state


def check_finite(state: dict, path, what: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first tensor with NaN or infinite values.

    Released weights are always finite; a non-finite value means a damaged file (bytes
    overwritten on disk or in transit) or a training run that diverged, and such weights
    give NaN logits and empty labels for every image.
    """
    for name, tensor in state.items():
        if tensor.dtype not in WEIGHT_DTYPES or tensor.numel() == 0:
            continue
        bad = ~torch.isfinite(tensor)
        if bad.any():
            n = int(bad.sum())
            raise CheckpointError(
                f"{what} {path} is damaged: tensor {name} holds {n} NaN or infinite value"
                f"{'s' if n > 1 else ''} of {tensor.numel()} (weights must be finite): "
                "download or copy the file again"
            )


_ZIPS_CHECKED: set[tuple] = set()  # (path, size, mtime) of files whose checksums matched

#: what a message about a damaged weights file tells the user to do
AGAIN = "Download or copy the file again, or choose another weights file"


def zip_damage(path: Path, size: int) -> str | None:
    """What is wrong with the ``torch.save`` file ``path`` (``size`` bytes), in the user's
    terms (never the names of the records inside it), or None if it is whole.

    Every record is checked against its CRC-32, which torch.load does not do, so bytes
    overwritten in a file of the same size would otherwise load as other values; a
    compressed record is refused before it is unpacked (torch.save never compresses, and
    a small compressed record could unpack to gigabytes).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            packed = [i for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
            bad = None if packed else zf.testzip()
    except Exception:  # noqa: BLE001 - a damaged zip directory raises many types
        return (
            f"is damaged or truncated ({size:,} bytes): the table of its contents, at its "
            "end, is missing or unreadable, as an interrupted download or copy leaves it"
        )
    if packed:
        return (
            "is not the file torch.save wrote: another tool compressed its contents "
            "(torch.save never does, and compressed contents could unpack to far more memory "
            "than the file's size)"
        )
    if bad is not None:
        return (
            "is damaged: some of its bytes changed after it was written (on disk, or in a "
            "download or copy), so the values in it cannot be trusted"
        )
    return None


def _check_zip(path: Path, what: str, size: int) -> None:
    """Refuse a damaged ``torch.save`` file (:func:`zip_damage`), once per file version."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _ZIPS_CHECKED:
        return
    problem = zip_damage(path, size)
    if problem is not None:
        raise CheckpointError(f"{what} {path} {problem}. {AGAIN}")
    _ZIPS_CHECKED.add(key)


def _check_floating(state: dict, path, what: str, names=None) -> None:
    """Refuse tensors of ``state`` (those in ``names``, default all) that are not floating
    point: weights are, and integer or boolean ones would be cast silently when loaded."""
    for name in sorted(state if names is None else names):
        tensor = state[name]
        if tensor.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{path} is not a usable {what} checkpoint: its tensor {name} holds "
                f"{_dtype_name(tensor.dtype)} values, but weights are floating "
                "point (float32, float16 or bfloat16); the file is damaged or was written "
                "wrongly: download or export it again"
            )


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def guess_config(state: dict) -> str | None:
    """Name the SAM2 config a SAM2 state dict was made for, if it is recognisable."""
    blocks = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"^(?:sam\.)?image_encoder\.trunk\.blocks\.(\d+)\.", k))
    }
    size = _SIZE_BY_BLOCKS.get(max(blocks) + 1) if blocks else None
    if size is None:
        return None
    v21 = "no_obj_embed_spatial" in state or "obj_ptr_tpos_proj.weight" in state
    return f"sam2.1_hiera_{size}" if v21 else f"sam2_hiera_{size}"


def _listing(keys, n: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_sam2_state_dict(state: dict, model, path, config: str) -> dict:
    """Return the SAM2 weights SANSA's ``model`` takes from ``state``, or raise."""
    if any(ADAPTER_KEY.match(k) for k in state):
        raise CheckpointError(
            f"{path} is a SANSA adapter checkpoint, not a SAM2 one: pass it as "
            "adapter_checkpoint and give Meta's SAM2 file as sam2_checkpoint"
        )
    model_state = model.state_dict()
    expected = {k: v.shape for k, v in model_state.items() if ".adapter." not in k}
    kept = {k: v for k, v in state.items() if not is_object_score_key(k)}
    missing = set(expected) - set(kept)
    extra = set(kept) - set(expected)
    wrong = {k for k in set(expected) & set(kept) if tuple(kept[k].shape) != tuple(expected[k])}
    if missing or extra or wrong:
        guess = guess_config(state)
        if guess and guess != config:
            raise CheckpointError(
                f"{path} holds SAM2 weights for {guess}, but the model is {config}: "
                f"use config={guess!r} or the {config} checkpoint"
            )
        parts = []
        if wrong:
            k = sorted(wrong)[0]
            parts.append(
                f"{len(wrong)} tensors of another shape (e.g. {k}: {tuple(kept[k].shape)} in the "
                f"file, {tuple(expected[k])} in {config})"
            )
        if missing:
            parts.append(f"{len(missing)} missing tensors ({_listing(missing)})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors ({_listing(extra)})")
        raise CheckpointError(
            f"{path} does not fit SAM2 {config}: "
            + "; ".join(parts)
            + ". Is it a SAM2 checkpoint of this size and version?"
        )
    _check_floating(kept, path, "SAM2", [k for k in kept if model_state[k].is_floating_point()])
    return kept


def adapter_layout(state: dict, model, path) -> dict[int, int]:
    """Check an adapter state dict against ``model``; return ``{block: bottleneck}``."""
    trunk = model.image_encoder.trunk
    by_block: dict[int, dict[str, torch.Tensor]] = {}
    unknown = []
    for k, v in state.items():
        m = ADAPTER_KEY.match(k)
        if m is None:
            unknown.append(k)
            continue
        by_block.setdefault(int(m.group(1)), {})[f"{m.group(2)}.{m.group(3)}"] = v
    if not unknown:
        _check_floating(state, path, "adapter")
    if unknown:
        looks_sam2 = any(k.startswith("image_encoder.") for k in unknown)
        hint = " It looks like a SAM2 checkpoint: pass it as sam2_checkpoint." if looks_sam2 else ""
        raise CheckpointError(
            f"{path} is not a SANSA adapter checkpoint: {len(unknown)} tensors are not adapter "
            f"weights ({_listing(unknown)}).{hint}"
        )
    if not by_block:
        raise CheckpointError(f"{path} holds no adapter weights")
    n_blocks = len(trunk.blocks)
    layout = {}
    for i in sorted(by_block):
        parts = by_block[i]
        if set(parts) != _ADAPTER_PARTS:
            raise CheckpointError(
                f"{path}: the adapter of Hiera block {i} is incomplete (missing "
                f"{_listing(_ADAPTER_PARTS - set(parts))})"
            )
        if i >= n_blocks:
            raise CheckpointError(
                f"{path} has adapters up to Hiera block {max(by_block)}, but the model's image "
                f"encoder has {n_blocks} blocks: it belongs to a larger SAM2 (the released "
                "adapters are for sam2_hiera_l)"
            )
        dim = trunk.blocks[i].dim_out
        down = parts["down_proj.weight"]
        if down.ndim != 2:
            raise CheckpointError(f"{path}: block {i}'s down_proj.weight is not a matrix")
        width, in_dim = down.shape
        shapes = {
            "adapter_layer_norm_before.weight": (dim,),
            "adapter_layer_norm_before.bias": (dim,),
            "down_proj.weight": (width, dim),
            "down_proj.bias": (width,),
            "up_proj.weight": (dim, width),
            "up_proj.bias": (dim,),
        }
        for name, shape in shapes.items():
            if tuple(parts[name].shape) != shape:
                raise CheckpointError(
                    f"{path}: the adapter of Hiera block {i} has {name} of shape "
                    f"{tuple(parts[name].shape)}, but block {i} of this model is {dim} wide "
                    f"(expected {shape}); the adapters belong to another SAM2 size"
                )
        layout[i] = int(width)
    return layout


def save_sam2_checkpoint(state: dict, path) -> Path:
    """Write a SAM2 state dict in Meta's format (``{"model": state}``)."""
    path = Path(path)
    torch.save({"model": {k: v.detach().cpu() for k, v in state.items()}}, path)
    return path


def save_adapter_checkpoint(model, path) -> Path:
    """Write a model's adapter weights in the authors' format (in fp32: a model held in
    bf16 on the CPU saves the values its adapters had before the cast)."""
    from napari_sansa.core.cpu_bf16 import fp32_adapters

    kept = fp32_adapters(model)
    state = {
        f"sam.{k}": kept.get(k, v).detach().cpu()
        for k, v in model.state_dict().items()
        if ".adapter." in k
    }
    if not state:
        raise ValueError("the model has no adapters to save")
    path = Path(path)
    torch.save({"model": state}, path)
    return path
