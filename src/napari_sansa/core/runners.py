"""Running targets through a prepared reference memory: independent and sequential.

Each runner is a generator over the targets that yields one
:class:`~napari_sansa.core.results.Prediction` per target, in order. The model
(:class:`~napari_sansa.core.model.SansaModel`) provides its image features
(``model.features``: loading, keys, cache, encoding, the compute context), its
result cache and its engine.

* independent: targets in batches; every target-class pair is decoded from the
  references' memory alone (episode index ``k``), with decoded pairs kept in the
  model's result cache; on out-of-memory a batch is retried in halves.
* sequential: one target at a time; each decoded target joins its classes'
  memory for the ones after it.
"""

from __future__ import annotations

import torch

from napari_sansa.core._threads import prefetch
from napari_sansa.core.engine import Features
from napari_sansa.core.errors import DeviceMemoryError
from napari_sansa.core.features import LoadedImage
from napari_sansa.core.results import ClassGroup, make_prediction
from napari_sansa.core.threads import current_plan

__all__ = ["CANCEL_BATCH", "BatchSizer", "is_out_of_memory", "run_independent", "run_sequential"]

# The largest batch of a run that can be cancelled (``segment_iter(cancel=...)``): a stop
# then waits for at most this many images' work. On a GPU a few images cost about as
# much as one; CPUs gain nothing from batching.
CANCEL_BATCH = {"cuda": 4}


class _Cancelled(Exception):
    """Raised inside a batch when the run's cancel token is set; ends the run quietly."""


def _prefetched(model, targets, s, depth: int):
    """Targets read and converted ahead, on background threads: (index, loaded)."""
    workers = current_plan().prefetch_workers(model.device.type)
    return prefetch(
        enumerate(targets),
        lambda item: (item[0], model.features.load(item[1], f"target {item[0]}", s)),
        depth=depth,
        workers=workers,
    )


# -- independent ------------------------------------------------------------------------
def run_independent(model, targets, groups, s):
    cap = CANCEL_BATCH.get(model.device.type, 1) if s.cancellable else None
    sizer = BatchSizer(s.batch_size, model.device, cap)
    source = _prefetched(model, targets, s, depth=max(2, sizer.size))
    try:
        yield from _independent_batches(model, source, groups, s, sizer)
    except _Cancelled:
        return
    finally:
        source.close()


def _independent_batches(model, source, groups, s, sizer):
    pending: list = []
    error = None
    while True:
        try:
            item = next(source)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - a target that cannot be read:
            error = exc  # the targets before it are finished first
            break
        pending.append(item)
        if len(pending) >= sizer.size:
            yield from _independent_batch(model, pending, groups, s, sizer)
            pending = []
    if pending:
        yield from _independent_batch(model, pending, groups, s, sizer)
    if error is not None:
        raise error


def _check_cancelled(s) -> None:
    if s.cancelled():
        raise _Cancelled


def _independent_batch(model, items, groups, s, sizer):
    """Decode a batch of targets; on out-of-memory, retry it in smaller batches.

    Target-class pairs found in the result cache are not decoded again, and a
    target whose classes are all found there is not even encoded.
    """
    n = len(items)
    loaded = [x[1] for x in items]
    try:
        with model.features.compute():
            sizer.start()
            found, todo = _cached_results(model, loaded, groups)
            need = sorted({j for pairs in todo for j, _ in pairs})
            if need:
                _check_cancelled(s)
                feats = model.features.encode([loaded[j] for j in need], s)
                row = {j: r for r, j in enumerate(need)}
                for g, pairs in zip(groups, todo, strict=True):
                    if not pairs:
                        continue
                    _check_cancelled(s)
                    out = decode_pairs(
                        model, g, feats, [row[j] for j, _ in pairs], [ci for _, ci in pairs]
                    )
                    for p, (j, ci) in enumerate(pairs):
                        result = (out.low_res[p], out.score[p])
                        found[(j, g.classes[ci])] = result
                        _remember(model, loaded[j], g, ci, result)
            classes = sorted(c for g in groups for c in g.classes)
            preds = []
            for j, (i, _) in enumerate(items):
                low = torch.cat([found[(j, c)][0].to(model.device) for c in classes])
                score = torch.stack([found[(j, c)][1].to(model.device) for c in classes])
                preds.append(make_prediction(i, loaded[j].hw, low, score, classes, s.threshold))
            if need:
                sizer.measured(len(need))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        del exc
        release_memory(model.device)
        if n == 1:
            _out_of_memory(model.device, items[0])
        sizer.shrink(n)
        half = n // 2
        yield from _independent_batch(model, items[:half], groups, s, sizer)
        yield from _independent_batch(model, items[half:], groups, s, sizer)
        return
    yield from preds


def decode_pairs(model, g: ClassGroup, feats: Features, rows: list[int], cls: list[int]):
    """Decode target ``rows[p]`` of ``feats`` for class ``g.classes[cls[p]]``, all pairs
    ``p`` as one batch (independent mode: episode index ``g.k``)."""
    mem, pos, n_ptr = model.engine.gather(g.entries, g.k)  # [L, classes, C]
    idx = torch.as_tensor(cls, device=mem.device)
    mem, pos = mem.index_select(1, idx), pos.index_select(1, idx)
    return model.engine.decode_with_memory(feats.take(rows), (mem, pos, n_ptr))


def _result_key(model, target: LoadedImage, g: ClassGroup, ci: int) -> str | None:
    if not model.result_cache.enabled or not target.keyed:
        return None
    return f"{target.key}|class-memory:{g.class_digests()[ci]}"


def _cached_results(model, loaded, groups):
    """``({(target, class): (logits [1, h, w], score)}, per group the (target, class
    index) pairs still to decode)``."""
    found, todo = {}, []
    for g in groups:
        pairs = []
        for j, target in enumerate(loaded):
            for ci, c in enumerate(g.classes):
                rkey = _result_key(model, target, g, ci)
                hit = model.result_cache.get(rkey) if rkey is not None else None
                if hit is None:
                    pairs.append((j, ci))
                else:
                    found[(j, c)] = hit
        todo.append(pairs)
    return found, todo


def _remember(model, target: LoadedImage, g: ClassGroup, ci: int, result) -> None:
    rkey = _result_key(model, target, g, ci)
    if rkey is not None:
        low, score = (x.detach().float().to("cpu", copy=True) for x in result)
        model.result_cache.put(rkey, (low, score), low.numel() * 4 + 4)


# -- sequential -------------------------------------------------------------------------
def run_sequential(model, targets, groups, s):
    groups = [ClassGroup(g.classes, g.k, dict(g.entries)) for g in groups]  # this run's episode
    keep = model.engine.memory_reach
    source = _prefetched(model, targets, s, depth=2)
    try:
        for j, loaded in source:
            try:
                with model.features.compute():
                    _check_cancelled(s)
                    feats = model.features.encode([loaded], s)
                    found = {}
                    for g in groups:
                        _check_cancelled(s)
                        t = g.k + j
                        mem, pos, n_ptr = model.engine.gather(g.entries, t)
                        f = feats.repeat_interleave(len(g.classes))
                        out = model.engine.decode_with_memory(f, (mem, pos, n_ptr))
                        g.entries[t] = model.engine.memory(f, out)
                        for old in [x for x in g.entries if 0 < x <= t - keep]:
                            del g.entries[old]
                        for ci, c in enumerate(g.classes):
                            found[c] = (out.low_res[ci], out.score[ci])
                    classes = sorted(found)
                    pred = make_prediction(
                        j,
                        loaded.hw,
                        torch.cat([found[c][0] for c in classes]),
                        torch.stack([found[c][1] for c in classes]),
                        classes,
                        s.threshold,
                    )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del exc
                release_memory(model.device)
                _out_of_memory(model.device, (j, loaded))
            yield pred
    except _Cancelled:
        return
    finally:
        source.close()


# -- batch size and device memory -------------------------------------------------------
class BatchSizer:
    """The batch size of a run: as given, or measured on the device (CUDA: from free memory)."""

    MAX = 64

    def __init__(self, fixed: int | None, device: torch.device, cap: int | None = None):
        self.device = device
        self.auto = fixed is None
        self.cap = cap  # a run that can be cancelled keeps its batches small
        self.size = fixed if fixed is not None else 1
        if cap is not None:
            self.size = min(self.size, cap)
        self._probing = self.auto and device.type == "cuda"

    def start(self):
        if self._probing:
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)

    def measured(self, n: int):
        """After a first batch on CUDA: as many targets as fit in 80 % of the free memory."""
        if not self._probing:
            return
        self._probing = False
        per_target = max((torch.cuda.max_memory_allocated(self.device) - self._base) / n, 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        self.size = int(min(self.MAX, self.cap or self.MAX, max(1, 0.8 * free / per_target)))

    def shrink(self, failed_at: int):
        self.size = max(1, min(self.size, failed_at) // 2)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def release_memory(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _out_of_memory(device, item):
    index, loaded = item
    h, w = loaded.hw
    need = ""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        peak = torch.cuda.max_memory_allocated(device)
        need = (
            f" (it used about {peak / 2**30:.1f} GiB before failing; {free / 2**30:.1f} of "
            f"{total / 2**30:.1f} GiB free)"
        )
    raise DeviceMemoryError(
        f"target {index} ({h}x{w} pixels) does not fit in the {device} memory even on "
        f"its own{need}: close other programs on the device, use precision='bf16', a smaller "
        "SAM2, or device='cpu'"
    ) from None
