"""The authors' training loss on one episode, through the engine, with autograd on.

An episode runs as in inference (supports first, then the query, as frames of one
sequence; ``Engine`` steps) but with the network in training mode: SAM2's
training-mode branches (the mask decoder's single-mask output without the dynamic
stability choice) and the memory attention's dropout. Each frame's low-resolution
logits are upsampled (bilinear) to the loss grid; the frames that count are every frame
under a prompt setting other than ``mask``, and all but the first under ``mask``. The
counted frames are flattened together; the focal loss (alpha 0.25, gamma 2) is the
mean over those pixels, the dice loss is ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)``;
over a batch each term is summed and divided by the batch size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_sansa.core.engine import Features
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE
from napari_sansa.core.preprocess import mask_to_input
from napari_sansa.core.training.episodes import SupportPrompt

__all__ = [
    "EpisodeInput",
    "dice_loss",
    "episode_loss",
    "episode_terms",
    "focal_loss",
]

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss of one episode's flattened pixels (mean over the pixels)."""
    logits, target = logits.float(), target.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice loss of one episode's flattened pixels."""
    p = logits.float().sigmoid()
    target = target.float()
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


@dataclass
class EpisodeInput:
    """One episode on the model's grid: support prompts, and each frame's loss target."""

    prompts: list  # per support: ("mask", [1,1,S,S] bool) or ("sparse", [1,P,2], [1,P])
    targets: list[torch.Tensor]  # per frame (supports, then the query): [gh, gw] float
    skip_first: bool  # the ``mask`` setting: the first frame does not count

    @property
    def k(self) -> int:
        return len(self.prompts)


def prompt_to_model(prompt: SupportPrompt, grid_hw, image_size: int, device):
    """A grid prompt -> the engine's inputs on the model's square grid."""
    if prompt.kind == "mask":
        return ("mask", mask_to_input(prompt.mask, image_size, None, device))
    gh, gw = grid_hw
    scale = np.array([image_size / gw, image_size / gh], np.float32)
    coords = torch.from_numpy(np.asarray(prompt.coords, np.float32) * scale).to(device)
    labels = torch.from_numpy(np.asarray(prompt.labels, np.int32)).to(device)
    return ("sparse", coords[None], labels[None])


def run_episode(engine, feats: Features, episode: EpisodeInput) -> list[torch.Tensor | None]:
    """Each frame's ``[1, 1, S/4, S/4]`` logits (None for a frame that does not count)."""
    k = episode.k
    if feats.batch != k + 1:
        raise ValueError(f"an episode of {k} supports needs {k + 1} images, got {feats.batch}")
    entries, preds = {}, []
    for idx in range(k):
        f = feats[idx]
        counts = not (episode.skip_first and idx == 0)
        prompt = episode.prompts[idx]
        if prompt[0] == "mask":
            decoded = engine.mask_prompt_pass(f, prompt[1])
            out = engine.decode_mask_prompt(f, prompt[1], decoded)
            # the authors' output for a mask support: the decoder's own mask (one pass
            # gives it and the object pointer)
            pred = decoded.low_res if counts else None
        else:
            out = engine.decode_sparse_prompt(f, prompt[1], prompt[2])
            pred = out.low_res if counts else None
        entries[idx] = engine.memory(f, out)
        preds.append(pred)
    query = engine.decode_with_memory(feats[k], engine.gather(entries, k))
    preds.append(query.low_res)
    return preds


def episode_terms(engine, feats: Features, episode: EpisodeInput):
    """``(focal, dice, query_logits_on_grid)`` of one episode (not divided by a batch)."""
    preds = run_episode(engine, feats, episode)
    logits, targets = [], []
    query = None
    for pred, target in zip(preds, episode.targets, strict=True):
        if pred is None:
            continue
        up = F.interpolate(pred.float(), size=tuple(target.shape), mode="bilinear",
                           align_corners=False)[0, 0]  # fmt: skip
        logits.append(up.reshape(-1))
        targets.append(target.reshape(-1))
        query = up
    flat, tgt = torch.cat(logits), torch.cat(targets)
    return focal_loss(flat, tgt), dice_loss(flat, tgt), query


def check_dropout(dropout) -> float | None:
    if dropout is None:
        return None
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InvalidInputError(f"dropout must be a rate in [0, 1) or None, got {dropout!r}")
    return float(dropout)


def _example_prompt(ex, image_size: int, input_size, device):
    from napari_sansa.core.preprocess import sparse_prompts_to_input

    if ex.prompt is None or not ex.prompt.sparse:
        mask = ex.mask if ex.prompt is None else ex.prompt.mask
        return ("mask", mask_to_input(mask, image_size, input_size, device))
    coords, labels = sparse_prompts_to_input([ex.prompt], ex.mask.shape, image_size)
    return (
        "sparse",
        torch.from_numpy(coords)[None].to(device),
        torch.from_numpy(labels)[None].to(device),
    )


def episode_loss(model, supports, query, *, dropout: float = 0.0, input_size=DEFAULT_INPUT_SIZE):
    """The authors' loss of one episode: ``{"focal": tensor, "dice": tensor}``.

    ``supports``: :class:`~napari_sansa.Example` s (their prompts, default their masks,
    stand for the class); ``query``: the :class:`~napari_sansa.Example` to find it in.
    The frames that count follow the authors' rule: all of them, except the first when
    every support is a mask. The terms are differentiable with respect to
    ``model.adapter_parameters()`` (this turns ``requires_grad`` on for those, and only
    those, parameters); nothing else of the model changes (weights, mode, dropout
    rates, caches). ``dropout=0.0``: the training-mode network without dropout
    (deterministic); None: SAM2's rates (0.1). ``input_size`` as in ``segment``.
    """
    from napari_sansa.core.images import check_input_size, to_float_rgb
    from napari_sansa.core.preprocess import image_to_input
    from napari_sansa.core.training.episodes import Example, grid_mask

    dropout = check_dropout(dropout)
    input_size = check_input_size(input_size)
    if isinstance(supports, Example):
        supports = [supports]
    supports = list(supports)
    if not supports:
        raise InvalidInputError("episode_loss needs at least one support Example")
    frames = [*supports, query]
    for i, ex in enumerate(frames):
        if not isinstance(ex, Example):
            what = "the query" if i == len(supports) else f"support {i}"
            raise InvalidInputError(f"{what} is a {type(ex).__name__}, not napari_sansa.Example")
    device = model.device
    engine = model.engine.sibling()  # its own position cache, made with autograd available
    size = engine.image_size

    episode = EpisodeInput(
        prompts=[_example_prompt(ex, size, input_size, device) for ex in supports],
        targets=[
            torch.from_numpy(grid_mask(ex.mask, input_size).astype(np.float32)).to(device)
            for ex in frames
        ],
        skip_first=all(ex.prompt is None or not ex.prompt.sparse for ex in supports),
    )
    images = torch.stack(
        [image_to_input(to_float_rgb(ex.image, None, "example image"), size, input_size, device)
         for ex in frames]
    )  # fmt: skip
    for _, p in engine.adapter_parameters():
        p.requires_grad_(True)
    autocast = (
        contextlib.nullcontext()
        if model.dtype == torch.float32
        else torch.autocast(device.type, dtype=model.dtype)
    )
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        engine.autograd_ready(),
        engine.training(dropout),
        autocast,
    ):
        focal, dice, _ = episode_terms(engine, engine.encode(images), episode)
    return {"focal": focal, "dice": dice}
