"""SANSA's prompt-and-propagate steps on a SAM2 model, batched.

Episode frames are the references (indices ``0..k-1``) followed by targets. Each
frame gives low-resolution mask logits, an object pointer and a memory entry; a
target is decoded from its own image features conditioned, by SAM2's memory
attention, on the memories of earlier frames chosen as in the authors' code:

* memories: frame 0 in temporal slot 0, and frames ``t-6 .. t-1`` (those > 0) in
  slots ``7 - (t - j)``; slot ``s`` adds ``maskmem_tpos_enc[num_maskmem - s - 1]``;
* object pointers: frame 0's, then frames ``t-1 .. t-15`` (> 0), each split into
  4 tokens of 64 channels with a zero positional encoding.

Everything here is batched along the first dimension, so several classes and
several targets go through each step together.

The :class:`Engine` is the only holder of the SAM2 network: the model, the runners and
fine-tuning reach it through the engine's steps, its adapters (``adapter_parameters``,
``adapter_blocks``), its modes (``training``, ``autograd_ready``) and the parts that
fine-tuning runs or hooks itself (``image_encoder``, ``mask_decoder``,
``memory_attention``). Only the weights code in :mod:`napari_sansa.core.models` (loading,
saving, the trainable copy) builds or reads the network as such.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_sansa.core.memory import frames_for

__all__ = ["Engine", "Features", "FrameOutput", "MemoryEntry"]

MASK_LOGIT = 10.0  # masks given as prompts become +-10 logits


@dataclass
class Features:
    """Image features of a batch: two high-resolution levels and the top level."""

    high_res: tuple[torch.Tensor, torch.Tensor]  # [B, 32, 4h, 4w], [B, 64, 2h, 2w]
    top: torch.Tensor  # [B, 256, h, w]

    @property
    def batch(self) -> int:
        return self.top.shape[0]

    def __getitem__(self, idx) -> Features:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Features((self.high_res[0][idx], self.high_res[1][idx]), self.top[idx])

    def take(self, rows: list[int]) -> Features:
        """The features of images ``rows`` (repeats allowed), in that order."""
        if list(rows) == list(range(self.batch)):
            return self
        idx = torch.as_tensor(rows, device=self.top.device)
        return Features(
            tuple(x.index_select(0, idx) for x in self.high_res), self.top.index_select(0, idx)
        )

    def repeat_interleave(self, n: int) -> Features:
        if n == 1:
            return self
        return Features(
            tuple(x.repeat_interleave(n, dim=0) for x in self.high_res),
            self.top.repeat_interleave(n, dim=0),
        )

    def to(self, device=None, dtype=None, non_blocking: bool = False) -> Features:
        def move(x):
            return x.to(device=device, dtype=dtype, non_blocking=non_blocking)

        return Features(tuple(move(x) for x in self.high_res), move(self.top))

    @staticmethod
    def cat(items: list[Features]) -> Features:
        if len(items) == 1:
            return items[0]
        return Features(
            (torch.cat([f.high_res[0] for f in items]), torch.cat([f.high_res[1] for f in items])),
            torch.cat([f.top for f in items]),
        )

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (*self.high_res, self.top))

    def to_numpy(self):
        """``((high0, high1, top), dtype names)`` as CPU numpy arrays (bf16 kept bit-exact)."""
        parts = (self.high_res[0], self.high_res[1], self.top)

        def conv(x):
            x = x.detach().cpu().contiguous()
            return x.view(torch.int16).numpy() if x.dtype == torch.bfloat16 else x.numpy()

        return tuple(conv(x) for x in parts), ",".join(str(x.dtype) for x in parts)

    @staticmethod
    def from_numpy(h0, h1, top, dtype_names: str) -> Features:
        def back(a, name):
            t = torch.from_numpy(np.ascontiguousarray(a))
            return t.view(torch.bfloat16) if name == str(torch.bfloat16) else t

        names = dtype_names.split(",")
        return Features((back(h0, names[0]), back(h1, names[1])), back(top, names[2]))


@dataclass
class FrameOutput:
    """What decoding a frame gives: logits at a quarter of the model's input size."""

    low_res: torch.Tensor  # [B, 1, S/4, S/4] float32 logits
    score: torch.Tensor  # [B] predicted IoU of the kept mask (1 for masks given as prompts)
    obj_ptr: torch.Tensor  # [B, 256]


@dataclass
class MemoryEntry:
    """A frame's contribution to later frames' memory."""

    features: torch.Tensor  # [B, 64, h, w]
    pos: torch.Tensor  # [B, 64, h, w]
    obj_ptr: torch.Tensor  # [B, 256]

    @staticmethod
    def cat(items: list[MemoryEntry]) -> MemoryEntry:
        if len(items) == 1:
            return items[0]
        return MemoryEntry(
            torch.cat([e.features for e in items]),
            torch.cat([e.pos for e in items]),
            torch.cat([e.obj_ptr for e in items]),
        )


class Engine:
    """SANSA's inference steps on a ``sam2`` ``SAM2Base`` (with or without adapters)."""

    def __init__(self, sam):
        self.sam = sam
        self.image_size = int(sam.image_size)
        if sam.num_feature_levels != 3 or not sam.use_high_res_features_in_sam:
            raise ValueError("SANSA needs SAM2 with three feature levels and high-res features")
        self._top_pos: torch.Tensor | None = None
        #: the CPU's bf16 path (see :mod:`napari_sansa.core.cpu_bf16`): the image encoder's
        #: weights are bf16 and it runs natively in bf16, autocast off; the prompt encoder
        #: and mask decoder run in fp32, autocast off
        self.cpu_bf16 = False

    def sibling(self) -> Engine:
        """Another engine on the same network, with caches of its own (e.g. position
        tables made with autograd available)."""
        engine = Engine(self.sam)
        engine.cpu_bf16 = self.cpu_bf16
        return engine

    def hold_encoder_in_bf16(self) -> None:
        """The CPU's bf16 path: the image encoder's weights cast to bf16 once; :meth:`encode`
        then casts the images once and runs the encoder without autocast, and
        :meth:`decode` runs in fp32 (memory attention and memory encoder: autocast)."""
        from napari_sansa.core.cpu_bf16 import hold_in_bf16

        hold_in_bf16(self.sam)
        self.cpu_bf16 = True

    # -- the network's adapters, parts and modes ------------------------------------------
    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every adapter tensor, named as in the authors' checkpoint."""
        from napari_sansa.core.models.weights import adapter_parameters

        return adapter_parameters(self.sam)

    def adapter_blocks(self) -> dict[int, int]:
        """``{Hiera block: bottleneck width}`` of the adapters (empty: plain SAM2)."""
        from napari_sansa.core.models.adapters import adapter_blocks

        return adapter_blocks(self.sam)

    def adapter_stages(self) -> tuple[int, ...]:
        """The Hiera stages that hold adapters."""
        from napari_sansa.core.models.adapters import block_stages

        stages = block_stages(self.sam.image_encoder.trunk)
        return tuple(sorted({stages[i] for i in self.adapter_blocks()}))

    @property
    def image_encoder(self) -> nn.Module:
        """SAM2's image encoder (Hiera trunk and FPN neck)."""
        return self.sam.image_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        """SAM2's mask decoder (its ``conv_s0``/``conv_s1`` make the high-res levels)."""
        return self.sam.sam_mask_decoder

    @property
    def memory_attention(self) -> nn.Module:
        return self.sam.memory_attention

    def modules(self):
        """Every module of the network (for checks of its dropout rates)."""
        return self.sam.modules()

    @property
    def memory_reach(self) -> int:
        """How many frames back a frame's memory reaches (memories or object pointers):
        a sequential run may drop entries older than that."""
        return max(self.sam.num_maskmem - 1, self.sam.max_obj_ptrs_in_encoder - 1)

    @contextlib.contextmanager
    def training(self, dropout: float | None):
        """Training mode for the duration; ``dropout`` (when not None) replaces every dropout
        rate (0.0: deterministic). Mode and rates are restored afterwards."""
        sam = self.sam
        was_training = sam.training
        saved = []
        for m in sam.modules():
            if isinstance(m, nn.Dropout):
                saved.append((m, "p", m.p))
            elif isinstance(getattr(m, "dropout_p", None), float):
                saved.append((m, "dropout_p", m.dropout_p))
        try:
            if dropout is not None:
                for m, attr, _ in saved:
                    setattr(m, attr, float(dropout))
            sam.train()
            yield
        finally:
            for m, attr, value in saved:
                setattr(m, attr, value)
            sam.train(was_training)

    @contextlib.contextmanager
    def autograd_ready(self):
        """Inference-mode tensors that SAM2 modules cache between calls (rotary and sine
        position tables, made by an earlier ``segment``) replaced by normal copies for the
        duration, so that autograd may use them; the originals are put back afterwards."""
        swapped = []
        for m in self.sam.modules():
            for name, value in list(vars(m).items()):
                if isinstance(value, torch.Tensor) and value.is_inference():
                    swapped.append((m, name, value))
                    setattr(m, name, value.clone())
                elif isinstance(value, dict) and any(
                    isinstance(v, torch.Tensor) and v.is_inference() for v in value.values()
                ):
                    swapped.append((m, name, value))
                    setattr(m, name, {k: v.clone() if isinstance(v, torch.Tensor) else v
                                      for k, v in value.items()})  # fmt: skip
        try:
            yield
        finally:
            for m, name, value in swapped:
                setattr(m, name, value)

    # -- image features ---------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> Features:
        """Image encoder on ``[B, 3, S, S]`` normalised images (what ``forward_image`` gives)."""
        if self.cpu_bf16:
            return self._encode_bf16(images)
        out = self.sam.forward_image(images)
        fpn = out["backbone_fpn"][-3:]
        return Features((fpn[0], fpn[1]), fpn[2])

    def _encode_bf16(self, images: torch.Tensor) -> Features:
        """``forward_image`` with the encoder in bf16: the images cast once, the encoder
        (bf16 weights) run with autocast off; the decoder's high-res projections
        (``conv_s0``/``conv_s1``, fp32 weights) run as before, under autocast."""
        sam = self.sam
        device = images.device.type
        with torch.autocast(device, enabled=False):
            out = sam.image_encoder(images.to(torch.bfloat16))
        fpn = out["backbone_fpn"][-3:]
        dec = sam.sam_mask_decoder
        with torch.autocast(device, dtype=torch.bfloat16):
            high_res = (dec.conv_s0(fpn[0]), dec.conv_s1(fpn[1]))
        return Features(high_res, fpn[2])

    def top_pos(self, top: torch.Tensor) -> torch.Tensor:
        """Positional encoding ``[HW, B, C]`` of top-level features (it depends on size only)."""
        b, _, h, w = top.shape
        key = (h, w, top.device)
        if self._top_pos is None or self._top_pos[0] != key:
            probe = torch.zeros(1, 1, h, w, device=top.device)
            pos = self.sam.image_encoder.neck.position_encoding(probe).float()
            self._top_pos = (key, pos.flatten(2).permute(2, 0, 1))
        return self._top_pos[1].expand(-1, b, -1)

    # -- decoder ------------------------------------------------------------------------
    def decode(self, pix, high_res, coords=None, labels=None, mask_prompt=None, multimask=False):
        """One prompt encoder and mask decoder pass on top-level features ``pix``."""
        if self.cpu_bf16:  # fp32, autocast off: logits as in fp32 runs (see core.cpu_bf16)
            with torch.autocast(pix.device.type, enabled=False):
                high_res = tuple(x.float() for x in high_res)
                if mask_prompt is not None:
                    mask_prompt = mask_prompt.float()
                return self._decode(pix.float(), high_res, coords, labels, mask_prompt, multimask)
        return self._decode(pix, high_res, coords, labels, mask_prompt, multimask)

    def _decode(self, pix, high_res, coords, labels, mask_prompt, multimask):
        sam = self.sam
        b = pix.shape[0]
        if coords is None:  # no prompt: one padding point
            coords = torch.zeros(b, 1, 2, device=pix.device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=pix.device)
        sparse, dense = sam.sam_prompt_encoder(
            points=(coords, labels), boxes=None, masks=mask_prompt
        )
        low, ious, tokens, _ = sam.sam_mask_decoder(
            image_embeddings=pix,
            image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=list(high_res),
        )
        low = low.float()
        token = tokens[:, 0]
        if multimask:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=pix.device)
            low = low[rows, best].unsqueeze(1)
            score = ious[rows, best]
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        else:
            score = ious[:, 0]
        return FrameOutput(low, score.float(), sam.obj_ptr_proj(token))

    def mask_prompt_pass(self, feats: Features, masks: torch.Tensor) -> FrameOutput:
        """The decoder pass on the raw image features with the mask ``[B, 1, S, S]`` as
        dense prompt (its object pointer is the reference's)."""
        m = masks.float()
        return self.decode(feats.top, feats.high_res, mask_prompt=self.sam.mask_downsample(m))

    def decode_mask_prompt(
        self, feats: Features, masks: torch.Tensor, decoded: FrameOutput | None = None
    ) -> FrameOutput:
        """A reference given as a mask ``[B, 1, S, S]``: the mask itself is the output.

        The object pointer comes from :meth:`mask_prompt_pass` (``decoded``, when the
        caller already ran it).
        """
        m = masks.float()
        high = m * (2 * MASK_LOGIT) - MASK_LOGIT
        low = F.interpolate(
            high,
            size=(high.shape[-2] // 4, high.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ptr = (decoded or self.mask_prompt_pass(feats, m)).obj_ptr
        return FrameOutput(low, torch.ones(m.shape[0], device=m.device), ptr)

    def decode_sparse_prompt(
        self, feats: Features, coords: torch.Tensor, labels: torch.Tensor, mask_prompt=None
    ) -> FrameOutput:
        """A reference given as points/boxes/scribbles (SAM2 ``(x, y)`` on the model grid);
        ``mask_prompt``: low-resolution logits ``[B, 1, S/4, S/4]`` given with them (a
        click fix chains its clicks so)."""
        pix = feats.top + self.sam.no_mem_embed.view(1, -1, 1, 1)
        if mask_prompt is not None:
            mask_prompt = mask_prompt.to(pix.dtype)
        return self.decode(
            pix, feats.high_res, coords=coords, labels=labels, mask_prompt=mask_prompt
        )

    def decode_with_memory(self, feats: Features, memory) -> FrameOutput:
        """A target: features conditioned on ``memory`` (from :meth:`gather`), no prompt."""
        mem, mem_pos, n_ptr = memory
        top = feats.top
        b, c, h, w = top.shape
        curr = top.flatten(2).permute(2, 0, 1)
        pix = self.sam.memory_attention(
            curr=[curr],
            curr_pos=[self.top_pos(top).to(curr.dtype)],
            memory=mem,
            memory_pos=mem_pos,
            num_obj_ptr_tokens=n_ptr,
        )
        pix = pix.permute(1, 2, 0).reshape(b, c, h, w)
        return self.decode(pix, feats.high_res, multimask=True)

    # -- memory -------------------------------------------------------------------------
    def memory(self, feats: Features, out: FrameOutput) -> MemoryEntry:
        """Memory entry of a decoded frame (memory encoder on its top-level features)."""
        s = self.image_size
        high = F.interpolate(out.low_res, size=(s, s), mode="bilinear", align_corners=False)
        top = feats.top
        b, c, h, w = top.shape
        mem, pos = self.sam._encode_new_memory(
            current_vision_feats=[top.flatten(2).permute(2, 0, 1)],
            feat_sizes=[(h, w)],
            pred_masks_high_res=high,
            object_score_logits=torch.full((b, 1), MASK_LOGIT, device=top.device),
            is_mask_from_pts=False,
        )
        return MemoryEntry(mem, pos[-1], out.obj_ptr)

    def frames_for(self, t: int, available) -> tuple[list[tuple[int, int]], list[int]]:
        """Which earlier frames a frame at episode index ``t`` attends to, as in the
        authors' code (see :func:`napari_sansa.core.memory.frames_for`)."""
        return frames_for(t, available, self.sam.num_maskmem, self.sam.max_obj_ptrs_in_encoder)

    def gather(self, entries: dict[int, MemoryEntry], t: int):
        """The memory a frame at episode index ``t`` attends to: ``(memory, pos, n_ptr_tokens)``."""
        sam = self.sam
        n_mem = sam.num_maskmem
        slots, ptr_frames = self.frames_for(t, entries)
        mems, poss = [], []
        for slot, j in slots:
            e = entries[j]
            mems.append(e.features.flatten(2).permute(2, 0, 1))
            pos = e.pos.flatten(2).permute(2, 0, 1)
            poss.append(pos + sam.maskmem_tpos_enc[n_mem - slot - 1])
        obj = torch.stack([entries[j].obj_ptr for j in ptr_frames], dim=0)  # [P, B, C]
        p, b, c = obj.shape
        split = c // sam.mem_dim
        obj = obj.reshape(p, b, split, sam.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        mems.append(obj)
        poss.append(obj.new_zeros(obj.shape))
        return torch.cat(mems, dim=0), torch.cat(poss, dim=0), obj.shape[0]
