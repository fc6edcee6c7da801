"""Fine-tuning the adapters on annotated frames: the authors' recipe, one step at a time.

:func:`finetune_iter` returns a :class:`Finetuning`: an iterator that runs one
optimisation step per ``next()`` and yields its :class:`StepStats`, so a caller can
show progress and stop between any two steps; ``result()`` then gives the tuned model
(the adapters that did best on the held-out frames, the starting ones included, or
the last ones without held-out frames; :attr:`Finetuning.outcome` says which and why) and
``state_dict()`` everything a later run needs to continue exactly where this one was.
:func:`finetune` runs it to the end (both in :mod:`.api`).

Recipe (see docs/training.md): AdamW (weight decay 0, betas 0.9/0.999), gradient norm
clipped to 0.1 over the adapter parameters, cosine schedule stepped every iteration over
the whole run, ``batch_size`` episodes per step with 1..``shots`` supports (one draw per
step), the network in training mode (memory-attention dropout 0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from napari_sansa.core.errors import InvalidInputError, SansaError
from napari_sansa.core.models.trainable import trainable_copy, wrap_model
from napari_sansa.core.preprocess import image_to_input
from napari_sansa.core.threads import thread_policy
from napari_sansa.core.training.encoder import PrefixEncoder
from napari_sansa.core.training.episodes import (
    check_frames,
    draw_prompt,
    split_validation,
)
from napari_sansa.core.training.loss import (
    EpisodeInput,
    episode_terms,
    prompt_to_model,
)
from napari_sansa.core.training.options import FinetuneOptions

__all__ = ["FinetuneReport", "Finetuning", "StepStats", "TrainingError"]

STATE_FORMAT = "napari-sansa-finetune-state/1"
CLIP_MAX_NORM = 0.1


class TrainingError(SansaError, RuntimeError):
    """Training cannot go on (the loss became NaN or infinite): the run stopped there.

    ``report``: the run's :class:`FinetuneReport` (which adapters ``result()`` hands back:
    the best finite ones that did better on the held-out frames than the starting ones,
    else the starting ones); ``model``: the model :func:`~.api.finetune` would have
    returned, set by it."""

    def __init__(self, message: str, report: FinetuneReport | None = None):
        super().__init__(message)
        self.report = report
        self.model = None


@dataclass(frozen=True)
class FinetuneReport:
    """Which adapters a run hands back, and what its held-out frames said about them.

    ``kept``: ``"tuned"`` or ``"original"`` (the starting adapters). ``checked``: whether
    held-out frames measured them (else ``reason`` says why not). ``step``: the step of
    the kept adapters (0: the starting ones). ``iou_before``: the held-out IoU of the
    starting adapters; ``iou_after``: that of the kept tuned adapters, or of the best
    tuned ones when the starting ones were kept (None: none was measured). ``error``:
    why the run stopped early (a non-finite loss). ``which``: ``result()``'s argument.
    """

    kept: str
    checked: bool
    step: int
    steps_done: int
    iou_before: float | None
    iou_after: float | None
    held_out: tuple[int, ...] = ()
    reason: str | None = None
    error: str | None = None
    which: str = "best"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["held_out"] = list(self.held_out)
        d["message"] = str(self)
        return d

    def __str__(self) -> str:
        frames = f"{len(self.held_out)} held-out frame{'s' * (len(self.held_out) != 1)}"
        b, a = self.iou_before, self.iou_after
        if not self.checked:
            if self.kept == "tuned":
                what = f"the tuned adapters (step {self.step}) are handed back without a check"
            elif self.error:
                what = "the original adapters are handed back (nothing measured the tuned ones)"
            else:
                what = "the original adapters are handed back (no step was trained)"
            return f"unchecked: {self.reason}; {what}"
        if self.kept == "tuned":
            last = self.which == "last"
            how = "the last tuned adapters, as asked" if last else "the tuned adapters"
            return f"kept {how} (step {self.step}): held-out IoU {b:.3f} -> {a:.3f} ({frames})"
        if a is None:
            return (
                f"kept the original adapters: no tuned adapters were measured (held-out IoU "
                f"{b:.3f}, {frames})"
            )
        verb = "fell" if a < b else "did not rise:"
        return (
            f"kept the original adapters: held-out IoU {verb} {b:.3f} -> {a:.3f} (the best "
            f"tuned adapters; {frames})"
        )


@dataclass(frozen=True)
class StepStats:
    """One step's numbers. ``step`` 0 is the validation before any training (loss None).

    ``val_loss``/``val_iou`` (held-out episode loss and the queries' IoU at logit 0) are
    set on validation steps only; ``best_step`` is the step whose adapters ``result()``
    would return now.
    """

    step: int
    steps: int
    loss: float | None
    focal: float | None
    dice: float | None
    lr: float
    grad_norm: float | None
    val_loss: float | None
    val_iou: float | None
    best_step: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _drops_only_in(engine, part, dropout) -> bool:
    """Whether ``part`` holds every module of ``engine``'s network that drops anything in
    a training step (with the rates ``engine.training(dropout)`` sets)."""
    inside = {id(m) for m in part.modules()}
    for m in engine.modules():
        if id(m) in inside:
            continue
        rates = [getattr(m, a, None) for a in ("dropout_p", "drop_prob")]
        if isinstance(m, torch.nn.Dropout):
            rates.append(m.p)
        rates = [r for r in rates if isinstance(r, float)]
        set_by_mode = isinstance(m, torch.nn.Dropout) or isinstance(
            getattr(m, "dropout_p", None), float
        )
        if dropout is not None and set_by_mode:
            rates.append(float(dropout))
        if any(r > 0 for r in rates):
            return False
    return True


class Finetuning:
    """A fine-tuning run (made by :func:`finetune_iter`); iterate it for its steps."""

    def __init__(self, model, data, s: FinetuneOptions, *, intensity_range=None,
                 cache_bytes: int = 1 << 30, resume=None):  # fmt: skip
        self.settings = s
        self.source_model = model
        self.frames = check_frames(data, s.input_size, intensity_range)
        seeds = np.random.SeedSequence(s.seed).spawn(4)
        self.train_idx, self.val_idx = split_validation(
            self.frames, s.validation, np.random.default_rng(seeds[0])
        )
        self.classes = list(self.frames.classes)
        self.unchecked_reason = _unchecked_reason(self.frames, s.validation, self.val_idx)
        self.engine = trainable_copy(model, fresh=s.fresh_adapters, stages=s.stages,
                                     channel_factor=s.channel_factor, seed=s.seed)  # fmt: skip
        self.device = model.device
        self.dtype = model.dtype
        self.named = self.engine.adapter_parameters()
        self.params = [p for _, p in self.named]
        first = min(int(n.split(".blocks.")[1].split(".")[0]) for n, _ in self.named)
        self.encoder = PrefixEncoder(self.engine, first, cache_bytes)
        self._kernels = None
        self.torch_rng = torch.Generator().manual_seed(int(seeds[2].generate_state(1)[0]))
        if self.device.type == "cpu":  # see attention.py: measured faster and leaner there
            from napari_sansa.core.training.attention import MathAttentionWhileTraining

            part = self.engine.memory_attention
            own = self.dtype == torch.float32 and _drops_only_in(self.engine, part, s.dropout)
            # otherwise its noise too is seeded from the (forked) global generator
            self._kernels = MathAttentionWhileTraining(part, self.torch_rng if own else None)
        opt_kwargs = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(
            [{"params": self.params, "initial_lr": s.lr}], lr=s.lr, weight_decay=0.0,
            betas=(0.9, 0.999), **opt_kwargs,
        )  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=s.steps)
        self.rng = np.random.default_rng(seeds[1])
        self._torch_state = self.torch_rng.get_state()
        self._cuda_state = None
        self.val_episodes = self._validation_episodes(np.random.default_rng(seeds[3]))
        self.step = 0
        self.best_step = 0
        self.best_val = math.inf  # the held-out loss of the best adapters
        self.best_iou = -math.inf  # ... and their held-out IoU, which picks them
        self.best = self._adapter_state()
        self.history: list[dict] = []
        self.digest = self._digest()
        self.closed = False
        self.error: str | None = None  # why the run stopped early (a non-finite loss)
        self.outcome: FinetuneReport | None = None  # set by result()
        self._measured: dict[int, tuple[float, float]] = {}  # step -> held-out (loss, IoU)
        if self.device.type == "cuda":
            self._check_memory(cache_bytes, seeds[3])
        if resume is not None:
            self.load_state_dict(resume)

    # -- episodes ------------------------------------------------------------------------
    def _episode(self, c: int, query: int, supports: list[int], rng) -> tuple:
        kinds = self.settings.prompt
        prompts = []
        for j in supports:
            kind = kinds[int(rng.integers(0, len(kinds)))] if len(kinds) > 1 else kinds[0]
            grid = self.frames.grid_masks[j][c]
            prompts.append(prompt_to_model(draw_prompt(grid, kind, rng), grid.shape,
                                           self.engine.image_size, self.device))  # fmt: skip
        frames = [*supports, query]
        targets = [
            torch.from_numpy(self.frames.grid_masks[j][c].astype(np.float32)).to(self.device)
            for j in frames
        ]
        return frames, EpisodeInput(prompts, targets, skip_first=kinds == ("mask",))

    def _sample(self, shot: int):
        rng = self.rng
        c = self.classes[int(rng.integers(0, len(self.classes)))]
        having = self.frames.frames_with(c, self.train_idx)
        query = having[int(rng.integers(0, len(having)))]
        others = [j for j in having if j != query]
        supports = [others[int(rng.integers(0, len(others)))] for _ in range(shot)]
        return self._episode(c, query, supports, rng)

    def _validation_episodes(self, rng) -> list:
        """Fixed held-out episodes: every held-out frame and class, ``shots`` supports from
        the training frames (all of them when fewer)."""
        out = []
        for q in self.val_idx:
            for c in sorted(self.frames.grid_masks[q]):
                having = self.frames.frames_with(c, self.train_idx)
                pick = rng.permutation(len(having))[: self.settings.shots]
                out.append(self._episode(c, q, [having[int(i)] for i in pick], rng))
        return out

    def _check_memory(self, cache_bytes: int, seed) -> None:
        """Probe the largest step on the GPU before the run starts (see :mod:`.memory`)."""
        from napari_sansa.core.training.memory import cache_budget, probe_step_memory

        s = self.settings
        free, _total = torch.cuda.mem_get_info(self.device)

        def episode():
            rng = np.random.default_rng(seed)
            c = self.classes[0]
            having = self.frames.frames_with(c, self.train_idx)
            ep = self._episode(c, having[0], [having[1]] * s.shots, rng)
            with self._random_state(), self.engine.training(s.dropout), self._autocast():
                f, d, _ = self._terms(ep)
                (f + d).backward()

        saved = (self._torch_state, self._cuda_state)
        try:
            peak = probe_step_memory(episode, self.device)
        finally:
            self._torch_state, self._cuda_state = saved
            self.optimizer.zero_grad(set_to_none=True)
            self.encoder = PrefixEncoder(self.engine, self.encoder.first, cache_bytes)
        budget = cache_budget(peak, free, cache_bytes, shots=s.shots,
                              image_size=self.engine.image_size, device=self.device)  # fmt: skip
        self.encoder.cache_bytes = budget

    def _inputs(self, frames):
        size, s = self.engine.image_size, self.settings.input_size
        return lambda rows: torch.stack(
            [image_to_input(self.frames.rgb[frames[r]], size, s, self.device) for r in rows]
        )

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _terms(self, episode):
        frames, inp = episode
        feats = self.encoder.encode(frames, self._inputs(frames))
        return episode_terms(self.engine, feats, inp)

    # -- stepping --------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> StepStats:
        if self.closed:
            raise StopIteration
        # threads sized for each step (the policy: napari_sansa.core.threads), put back after
        with thread_policy(getattr(self.source_model.settings, "threads", None)):
            return self._next()

    def _next(self) -> StepStats:
        if self.step == 0 and not self.history and self.val_episodes:
            return self._record(self._stats(None, None))
        if self.step >= self.settings.steps:
            self.closed = True
            raise StopIteration
        return self._record(self._train_step())

    def _record(self, stats: StepStats) -> StepStats:
        self.history.append(stats.as_dict())
        return stats

    @property
    def _own_rng(self) -> bool:
        """Whether every draw of a step comes from ``torch_rng`` (see _random_state)."""
        return self._kernels is not None and self._kernels.generator is self.torch_rng

    @contextlib.contextmanager
    def _random_state(self):
        """The run's own torch random state (dropout), kept apart from the caller's. On
        the CPU in float32, when only the memory attention drops (SAM2's own rates, or
        ``dropout=0``), every draw of a step is its dropout noise, seeded from the run's
        generator: PyTorch's global one is not touched (another thread, or a second run,
        may be using it). Otherwise PyTorch's global generators are forked."""
        if self._own_rng:
            self.torch_rng.set_state(self._torch_state)
            yield
            self._torch_state = self.torch_rng.get_state()
            return
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self._torch_state)
            if cuda and self._cuda_state is not None:
                torch.cuda.set_rng_state(self._cuda_state, self.device)
            yield
            self._torch_state = torch.get_rng_state()
            if cuda:
                self._cuda_state = torch.cuda.get_rng_state(self.device)

    def _train_step(self) -> StepStats:
        s = self.settings
        t0 = time.perf_counter()
        shot = int(self.rng.integers(1, s.shots + 1))
        episodes = [self._sample(shot) for _ in range(s.batch_size)]
        focal = dice = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        with self._random_state(), self.engine.training(s.dropout):
            for ep in episodes:
                with self._autocast():
                    f, d, _ = self._terms(ep)
                ((f + d) / s.batch_size).backward()
                focal += float(f.detach()) / s.batch_size
                dice += float(d.detach()) / s.batch_size
        if not math.isfinite(focal + dice):
            self.optimizer.zero_grad(set_to_none=True)
            self.closed = True  # stop here: no step after a non-finite loss
            self.error = f"the loss became {focal + dice} at step {self.step + 1}"
            if not self.val_episodes:  # nothing checked the tuned adapters: the starting ones
                self.best_step = 0
            report = self.report()
            raise TrainingError(
                f"{self.error}: fine-tuning stopped there; {report}. Lower the learning rate "
                "(lr) and run again",
                report,
            )
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, CLIP_MAX_NORM))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return self._stats((focal, dice, grad_norm, lr), time.perf_counter() - t0)

    def _stats(self, train, seconds) -> StepStats:
        s = self.settings
        val_loss = val_iou = None
        due = self.step % s.validate_every == 0 or self.step == s.steps
        if self.val_episodes and due:
            val_loss, val_iou = self.validate()
            self._consider(val_loss, val_iou)
        elif not self.val_episodes:
            self.best_step = self.step
        focal, dice, grad_norm, lr = train or (
            None,
            None,
            None,
            self.optimizer.param_groups[0]["lr"],
        )
        loss = None if train is None else focal + dice
        return StepStats(self.step, s.steps, loss, focal, dice, lr, grad_norm, val_loss, val_iou,
                         self.best_step, seconds or 0.0)  # fmt: skip

    def _consider(self, val_loss: float, val_iou: float) -> None:
        """The current adapters were measured: keep them if their held-out IoU is higher
        than the best so far (a tie keeps the earlier, the starting adapters first; the
        loss is no guide: it can fall while the IoU falls). Non-finite adapters never."""
        self._measured[self.step] = (val_loss, val_iou)
        finite = all(bool(torch.isfinite(p).all()) for p in self.params)
        if finite and val_iou > self.best_iou:
            self.best_val, self.best_iou, self.best_step = val_loss, val_iou, self.step
            self.best = self._adapter_state()

    def validate(self) -> tuple[float, float]:
        """Mean held-out episode loss (dropout off) and the queries' mean IoU at logit 0."""
        losses, ious = [], []
        with torch.no_grad(), self.engine.training(0.0), self._autocast():
            for ep in self.val_episodes:
                f, d, query = self._terms(ep)
                losses.append(float(f + d))
                pred, target = query > 0, ep[1].targets[-1] > 0.5
                union = float((pred | target).sum())
                ious.append(float((pred & target).sum()) / union if union else 1.0)
        return float(np.mean(losses)), float(np.mean(ious))

    # -- results and state -----------------------------------------------------------------
    def _adapter_state(self) -> dict:
        return {n: p.detach().to("cpu", copy=True) for n, p in self.named}

    def _load_adapters(self, state: dict) -> None:
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(state[n].to(p.device))

    def report(self, which: str = "best") -> FinetuneReport:
        """What ``result(which)`` would hand back now, from the measurements so far."""
        checked = bool(self.val_episodes)
        before = self._measured.get(0, (None, None))[1]
        if which == "last":
            step = self.step
            after = self._measured.get(step, (None, None))[1] if step else None
        else:
            step = self.best_step
            tuned = {k: v for k, v in self._measured.items() if k > 0}
            if step:
                after = tuned[step][1] if step in tuned else None
            else:  # the starting adapters kept: the best tuned ones, for comparison
                after = max((v[1] for v in tuned.values()), default=None)
        return FinetuneReport(
            kept="tuned" if step else "original",
            checked=checked and before is not None,
            step=step,
            steps_done=self.step,
            iou_before=before,
            iou_after=after,
            held_out=tuple(self.val_idx),
            reason=None if checked else (self.unchecked_reason or "nothing measured yet"),
            error=self.error,
            which=which,
        )

    def result(self, which: str = "best"):
        """The tuned model (a new :class:`SansaModel`) and the run's end.

        ``"best"``: with held-out frames, the adapters with the highest held-out IoU, the
        starting ones included (so a run that made them worse hands back the starting
        adapters; the current ones are measured first when the last validation was
        earlier); without, the last ones. ``"last"``: the last ones. After a non-finite
        loss: the best finite ones that did better than the starting ones, else the
        starting ones. :attr:`outcome` (also the model's ``finetune_report``) says which
        adapters it holds, with the held-out IoU before and after."""
        if which not in ("best", "last"):
            raise InvalidInputError(f"which must be 'best' or 'last', got {which!r}")
        self.closed = True
        unmeasured = self.step > 0 and self.step not in self._measured
        if self.val_episodes and self.encoder is not None and unmeasured and not self.error:
            self._consider(*self.validate())
        if which == "best" and self.best_step != self.step:
            self._load_adapters(self.best)
        self.outcome = self.report(which)
        self.encoder = None
        if self._kernels is not None:
            self._kernels.remove()
            self._kernels = None
        model = wrap_model(self.source_model, self.engine)
        model.finetune_report = self.outcome
        return model

    def _digest(self) -> str:
        h = hashlib.sha256()
        for rgb, masks in zip(self.frames.rgb, self.frames.grid_masks, strict=True):
            h.update(rgb.tobytes())
            for c in sorted(masks):
                h.update(str(c).encode())
                h.update(np.packbits(masks[c]).tobytes())
        for _, p in self.named:
            h.update(p.detach().cpu().numpy().tobytes())  # the starting adapters
        return h.hexdigest()

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly (plain types and tensors)."""
        return {
            "format": STATE_FORMAT,
            "settings": self.settings.record(),
            "digest": self.digest,
            "step": self.step,
            "adapters": self._adapter_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": self._torch_state.clone(),
            "best": self.best,
            "best_val": self.best_val,
            "best_step": self.best_step,
            "history": list(self.history),
        }

    def save_state(self, path) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically, as plain values and tensors
        (read it back with ``finetune_iter(..., resume=path)``)."""
        from napari_sansa.core.training.state import save_state

        return save_state(self.state_dict(), path)

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InvalidInputError("this is not a napari-sansa fine-tuning state")
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing or not isinstance(state["settings"], dict):
            raise InvalidInputError(
                "the fine-tuning state is incomplete (it lacks "
                f"{', '.join(missing) or 'its settings'}): start the run afresh"
            )
        if state["settings"] != mine["settings"] or state["digest"] != self.digest:
            diff = [k for k in mine["settings"] if state["settings"].get(k) != mine["settings"][k]]
            what = f"settings {', '.join(diff)}" if diff else "training frames or starting model"
            raise InvalidInputError(
                f"the saved fine-tuning state belongs to another run (its {what} differ): "
                "resume with the same data, model and settings, or start afresh"
            )
        try:  # every part checked, and the random states set on fresh generators first
            checked = self._checked_state(state, mine)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError,
                OverflowError, IndexError) as exc:  # fmt: skip
            raise InvalidInputError(
                f"the fine-tuning state is damaged ({type(exc).__name__}: {str(exc)[:160]}): "
                "start the run afresh"
            ) from None
        # nothing above changed this run; nothing below can fail on a checked state
        self._load_adapters(checked["adapters"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = checked["rng"]
        self._torch_state = checked["torch_rng"]
        self.best = checked["best"]
        self.best_val = checked["best_val"]
        self.best_step = checked["best_step"]
        self.history = checked["history"]
        self.step = checked["step"]
        self._measured = checked["measured"]
        self.best_iou = self._measured.get(self.best_step, (None, -math.inf))[1]

    def _checked_state(self, state: dict, mine: dict) -> dict:
        """The parts of ``state`` this run takes, each checked (types, ranges, dtypes and
        shapes), without changing the run; raises ValueError or TypeError naming the part."""
        steps = self.settings.steps
        step = _int(state["step"], "step", 0, steps)
        best_step = _int(state["best_step"], "best_step", 0, step)
        best_val = state["best_val"]
        if not _is_number(best_val) or math.isnan(best_val) or best_val == -math.inf:
            raise ValueError(f"its best_val {best_val!r} is not a number or +inf")
        out = {"step": step, "best_step": best_step, "best_val": float(best_val)}
        for part in ("adapters", "best"):
            out[part] = self._checked_adapters(state[part], part)
        self._check_optimizer(state["optimizer"], mine["optimizer"])
        _check_like(state["scheduler"], mine["scheduler"], "scheduler")
        if state["scheduler"]["T_max"] != steps or state["scheduler"]["last_epoch"] != step:
            raise ValueError("its scheduler is not at its step of this run's schedule")
        bits = type(self.rng.bit_generator)()
        rng = state["rng"]
        if not isinstance(rng, dict) or rng.get("bit_generator") != mine["rng"]["bit_generator"]:
            raise ValueError(f"its rng is not a {mine['rng']['bit_generator']} state")
        _check_like(rng, mine["rng"], "rng")
        for key, value in [*rng["state"].items(), ("uinteger", rng["uinteger"])]:
            _int(value, f"rng {key}", 0, 2**128 - 1)
        _int(rng["has_uint32"], "rng has_uint32", 0, 1)
        bits.state = rng  # refuses a state the generator cannot take
        out["rng"] = rng
        t = state["torch_rng"]
        n = mine["torch_rng"].numel()
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.shape != (n,):
            what = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t)
            raise ValueError(f"its torch_rng is {what}, not {n} uint8 values")
        torch.Generator().set_state(t)  # refuses a state the generator cannot take
        out["torch_rng"] = t.clone()
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ValueError("its history is not a list of steps")
        measured = {}
        for h in history:
            at = _int(h.get("step"), "history step", 0, step)
            loss, iou = h.get("val_loss"), h.get("val_iou")
            if iou is None:
                continue
            if not (_is_number(loss) and math.isfinite(loss) and _is_number(iou)):
                raise ValueError(f"its history at step {at} has no held-out loss and IoU")
            if not 0 <= iou <= 1:
                raise ValueError(f"its history at step {at} has a held-out IoU of {iou!r}")
            measured[at] = (float(loss), float(iou))
        out["history"] = list(history)
        out["measured"] = measured
        return out

    def _checked_adapters(self, part, name: str) -> dict:
        if not isinstance(part, dict) or set(part) != {n for n, _ in self.named}:
            raise ValueError(f"its {name} are not this run's adapter tensors")
        for n, p in self.named:
            t = part[n]
            if not isinstance(t, torch.Tensor) or t.dtype != p.dtype or t.shape != p.shape:
                what = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t)
                raise ValueError(
                    f"its {name} are not this run's adapter tensors ({n} is {what}, not "
                    f"{p.dtype} {tuple(p.shape)})"
                )
            if not bool(torch.isfinite(t).all()):  # no run saves these: training stops first
                raise ValueError(f"its {name} hold values that are not finite ({n})")
        return {n: part[n].clone() for n, _ in self.named}

    def _check_optimizer(self, opt, mine: dict) -> None:
        if not isinstance(opt, dict) or set(opt) != {"state", "param_groups"}:
            raise ValueError("its optimizer is not an AdamW state")
        groups = opt["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(mine["param_groups"]):
            raise ValueError("its optimizer's parameter groups are not this run's")
        for g, m in zip(groups, mine["param_groups"], strict=True):
            _check_like(g, m, "optimizer parameter group")
            if g["params"] != m["params"]:
                raise ValueError("its optimizer's parameter groups are not this run's")
        shapes = dict(enumerate(p for p in self.params))
        states = opt["state"]
        if not isinstance(states, dict) or not set(states) <= set(shapes):
            raise ValueError("its optimizer state is not for this run's adapters")
        for i, st in states.items():
            if not isinstance(st, dict) or set(st) != {"step", "exp_avg", "exp_avg_sq"}:
                raise ValueError(f"its optimizer state of parameter {i} is not AdamW's")
            count = st["step"]
            if isinstance(count, torch.Tensor):
                count = float(count) if count.numel() == 1 and count.is_floating_point() else -1
            if not _is_number(count) or not 0 <= count <= 2**53:
                raise ValueError(f"its optimizer step count of parameter {i} is {count!r}")
            for key in ("exp_avg", "exp_avg_sq"):
                t, p = st[key], shapes[i]
                if not (isinstance(t, torch.Tensor) and t.dtype in _FLOATS
                        and t.shape == p.shape):  # fmt: skip
                    raise ValueError(
                        f"its optimizer {key} of parameter {i} is not {tuple(p.shape)} floats"
                    )
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"its optimizer {key} of parameter {i} is not finite")


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x, what: str, low: int, high: int) -> int:
    """``x`` if it is an int (not a bool) in ``[low, high]``, else ValueError."""
    if not isinstance(x, int) or isinstance(x, bool) or not low <= x <= high:
        raise ValueError(f"its {what} is {x!r}, not a whole number from {low} to {high}")
    return x


def _check_like(value, like, what: str) -> None:
    """``value`` has ``like``'s keys, and each is of its kind: a number a finite number
    (an int an int), a list or tuple as long, anything else equal."""
    if isinstance(like, dict):
        if not isinstance(value, dict) or set(value) != set(like):
            raise ValueError(f"its {what} does not have the entries it should")
        for k in like:
            _check_like(value[k], like[k], f"{what} {k}")
    elif isinstance(like, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(like):
            raise ValueError(f"its {what} is {value!r}, not {len(like)} values")
        for v, m in zip(value, like, strict=True):
            _check_like(v, m, what)
    elif isinstance(like, bool) or like is None or isinstance(like, str):
        if type(value) is not type(like) or value != like:
            raise ValueError(f"its {what} is {value!r}, not {like!r}")
    elif isinstance(like, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"its {what} is {value!r}, not a whole number")
    elif isinstance(like, float):
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"its {what} is {value!r}, not a finite number")
    elif isinstance(value, torch.Tensor) != isinstance(like, torch.Tensor):
        raise ValueError(f"its {what} is a {type(value).__name__}")


def _unchecked_reason(frames, fraction: float, held: list[int]) -> str | None:
    """Why no frame is held out (None when some are)."""
    if held:
        return None
    n = len(frames.rgb)
    if fraction <= 0:
        return "no frame was held out (validation=0)"
    if n < 3:
        return (
            f"too few frames to hold one out ({n} given, 3 needed: two to train on and one "
            "to measure the tuned adapters on)"
        )
    short = [c for c in frames.classes if len(frames.frames_with(c, range(n))) < 3]
    return (
        f"no frame can be held out: every class must stay annotated in two training frames, "
        f"and class{'es' * (len(short) > 1)} {', '.join(map(str, short))} "
        f"{'are each' if len(short) > 1 else 'is'} annotated in only two frames (annotate "
        f"{'them' if len(short) > 1 else 'it'} in a third frame)"
    )
