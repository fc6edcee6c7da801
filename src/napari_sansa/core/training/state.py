"""The fine-tuning state file: plain values and tensors, never code.

A state file travels with results folders, so it is read as data: ``torch.load`` with
``weights_only=True`` (no class of the file's choosing is built, no function of its
choosing is called), then every value is checked to be a plain container (dict, list,
tuple) of str, int, float, bool, None and tensors. Anything else, and a damaged,
empty or truncated file, is refused with an :class:`~napari_sansa.core.errors.
InvalidInputError` that says how to start afresh. The check is generic: a new plain
field of :meth:`Finetuning.state_dict` needs no change here.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.checkpoints import zip_damage

__all__ = ["StateFileError", "check_plain", "load_state", "save_state", "to_plain"]

_SCALARS = (str, int, float, bool, type(None))
#: containers nested deeper than this are refused (a state is about 5 levels deep)
MAX_DEPTH = 32
#: states holding more values than this are refused (a state holds a few thousand)
MAX_NODES = 1_000_000
# how check_plain's answers end when the containers, not the values, are wrong
_STRUCTURE = ("levels deep", "contains itself", "(counting each repeat)", "too deeply")


class StateFileError(InvalidInputError):
    """A fine-tuning state file is damaged, unsafe, or not a state file."""

    def __init__(self, path, problem: str, restart: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"the fine-tuning state {path} {problem}: {restart}")


def _where(where: str, key) -> str:
    return f"{where}[{key!r}]"


def to_plain(obj, where: str = "state", depth: int = 0):
    """``obj`` as plain containers, scalars and plain (detached) tensors, for saving.

    Dict subclasses become dicts, numpy scalars Python scalars, parameters tensors; any
    other object raises ``TypeError`` naming where it is (a state must not hold one).
    """
    if depth > MAX_DEPTH:
        raise TypeError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, torch.Tensor):
        return obj.detach().as_subclass(torch.Tensor)
    if isinstance(obj, np.generic) and isinstance(obj.item(), _SCALARS):
        return obj.item()
    if type(obj) in _SCALARS:
        return obj
    for base in (str, int, float):  # a subclass (an enum, say): its plain value
        if isinstance(obj, base):
            return base.__str__(obj) if base is str else base(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, np.generic):
                k = k.item()
            if type(k) not in (str, int):
                raise TypeError(f"{where} has a key {k!r} that is not a str or an int")
            out[k] = to_plain(v, _where(where, k), depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a fine-tuning state "
        "holds only dicts, lists, tuples, str, int, float, bool, None and tensors"
    )


def check_plain(obj, where: str = "state", depth: int = 0, *, _seen=None) -> str | None:
    """Where ``obj`` holds something other than plain values and tensors (None if nowhere).

    Each container is walked once, but counted each time it appears: a file can make one
    list the child of many (30 levels of ``x = [x, x]`` are 1.5 KB and 2**30 values), and a
    state of more than :data:`MAX_NODES` values so counted is refused, as is a container
    inside itself.
    """
    if _seen is None:
        _seen = {"size": {}, "open": set(), "count": 0}
    if depth > MAX_DEPTH:
        return f"{where} is nested more than {MAX_DEPTH} levels deep"
    kind = type(obj)
    if kind in _SCALARS or kind is torch.Tensor:
        _seen["count"] += 1
        return None
    is_dict = kind is dict or kind is OrderedDict  # torch.save keeps a state dict's order
    if not is_dict and kind not in (list, tuple):
        return f"{where} is a {kind.__module__}.{kind.__qualname__}"
    if id(obj) in _seen["open"]:
        return f"{where} contains itself"
    start = _seen["count"]
    size = _seen["size"].get(id(obj))
    if size is not None:  # a container seen before, at another place: counted again
        _seen["count"] += size
    else:
        _seen["open"].add(id(obj))
        _seen["count"] += 1
        for k, v in obj.items() if is_dict else enumerate(obj):
            if is_dict and type(k) not in (str, int):
                return f"{where} has a key of type {type(k).__name__}"
            sub = _where(where, k) if is_dict else f"{where}[{k}]"
            bad = check_plain(v, sub, depth + 1, _seen=_seen)
            if bad:
                return bad
        _seen["open"].discard(id(obj))
        _seen["size"][id(obj)] = _seen["count"] - start
    if _seen["count"] > MAX_NODES:
        return f"it holds more than {MAX_NODES} values (counting each repeat)"
    return None


def save_state(state: dict, path) -> Path:
    """Write ``state`` (a :meth:`Finetuning.state_dict`) to ``path`` atomically.

    Only plain values and tensors are written (``TypeError`` otherwise), so that
    :func:`load_state` reads back everything that was saved.
    """
    from napari_sansa.core.atomic import atomic_write

    plain = to_plain(state)
    path = Path(path).expanduser()
    with atomic_write(path) as tmp:
        torch.save(plain, tmp)
    return path


def load_state(path, *, fmt: str | None = None, restart: str | None = None) -> dict:
    """Read a state file written by :func:`save_state`, as data only.

    Raises :class:`StateFileError` (an ``InvalidInputError``) for a missing, empty,
    truncated or damaged file, one that is not a fine-tuning state (``fmt``: the
    expected ``"format"`` entry), and one holding Python objects other than plain values
    and tensors: such a file is refused before any of it is built, so it cannot run
    code. ``restart``: what the message tells the user to do (default: start afresh).
    """
    path = Path(path).expanduser()
    # a folder or nothing at the path: the user's, not a state of ours to delete or replace
    what_to_pass = restart or (
        "pass resume= the path of a state file written by save_state(), or leave resume= "
        "out to start the fine-tuning afresh"
    )
    if restart is None:
        restart = (
            f"start the fine-tuning afresh (without resume=); delete {path} or save the new "
            "run's state over it"
        )

    def refuse(problem: str) -> StateFileError:
        return StateFileError(path, problem, restart)

    if path.is_dir():
        raise StateFileError(path, "is a folder, not a state file", what_to_pass)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise StateFileError(path, "does not exist", what_to_pass) from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise refuse("is damaged: it is empty (0 bytes)")
    if head != b"PK\x03\x04":
        raise refuse(
            "is damaged or not a napari-sansa fine-tuning state (it does not begin like a "
            "file written by torch.save)"
        )
    problem = zip_damage(path, size)  # in the user's words, no record names
    if problem is not None:
        raise refuse(problem)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise refuse(
                "holds Python objects other than tensors and plain values, which "
                "napari-sansa does not load (loading them could run code)"
            ) from None
        raise refuse(f"is damaged ({type(exc).__name__}: {str(exc)[:160]})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise refuse(f"is damaged ({type(exc).__name__}: {str(exc)[:160]})") from None
    try:
        bad = check_plain(state)
    except RecursionError:
        bad = "it is nested too deeply"
    if bad and bad.endswith(_STRUCTURE):
        raise refuse(f"is damaged ({bad})")
    if bad:
        raise refuse(
            f"holds something other than tensors and plain values ({bad}), which "
            "napari-sansa does not load"
        )
    if not isinstance(state, dict) or (fmt is not None and state.get("format") != fmt):
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise refuse(f"is not a napari-sansa fine-tuning state (format {found!r})")
    return state
