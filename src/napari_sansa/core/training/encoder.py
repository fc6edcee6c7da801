"""The image encoder for training, with its frozen prefix computed once per image.

Only the adapters train, and the first adapter sits in Hiera block ``f``: the patch
embedding and blocks ``0..f-1`` (and the stage outputs among them, which feed the FPN
neck's high-resolution levels) are frozen and see no gradient, so their outputs for a
training image are the same at every step. :class:`PrefixEncoder` computes them once
per image without autograd, keeps them in a cache bounded in bytes (least recently
used first out), and runs only blocks ``f..`` and the neck with autograd. A
high-resolution level whose neck output takes no top-down features (SAM2's levels 0 and
1) is frozen all the way to the mask decoder's ``conv_s0``/``conv_s1``: the cache keeps
that final feature map (a third of the stage output's bytes at level 0) and the step
skips its lateral and ``conv_s`` convolutions. Block ``f`` itself is frozen but for its
adapter, which runs beside the MLP (``x + mlp(norm2(x)) + adapter(x)``, ``x`` the
value after the attention residual): the cache keeps ``x`` and ``x + mlp(norm2(x))``,
and the step runs only the adapter of block ``f``. The neck's position encodings are
not made (training uses the engine's own). The result is the same as ``Engine.encode`` on
the full encoder.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from napari_sansa.core.engine import Features

__all__ = ["PrefixEncoder"]


class PrefixEncoder:
    """``encode(keys, images)`` -> :class:`Features`, the frozen prefix cached by key."""

    def __init__(self, engine, first_trainable: int, cache_bytes: int = 1 << 30):
        self.encoder = engine.image_encoder
        self.trunk = self.encoder.trunk
        self.first = int(first_trainable)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.neck = self.encoder.neck
        dec = engine.mask_decoder
        self.high_convs = (dec.conv_s0, dec.conv_s1)
        ends = [i for i in range(len(self.trunk.blocks)) if self._stage_out(i)]
        top_down = set(self.neck.fpn_top_down_levels)
        # level i frozen: made in the prefix, no top-down input, and not the top-down
        # input of level i - 1 (levels 0 and 1 go through conv_s0 / conv_s1)
        self.frozen = {
            i for i in (0, 1)
            if i < len(ends) and ends[i] < self.first and i not in top_down
            and (i == 0 or i - 1 not in top_down)
        }  # fmt: skip
        block = self.trunk.blocks[self.first] if self.first < len(self.trunk.blocks) else None
        # block f's attention half and MLP are frozen when its drop path is the identity
        self.split = isinstance(getattr(block, "adapter", None), nn.Module) and isinstance(
            getattr(block, "drop_path", None), nn.Identity
        )

    def _stage_out(self, i: int) -> bool:
        t = self.trunk
        return i == t.stage_ends[-1] or (i in t.stage_ends and t.return_interm_layers)

    def _prefix(self, images: torch.Tensor):
        """Patch embedding and blocks before the first trainable one, without autograd:
        ``(state, levels)``, ``state`` the input of block ``f`` or (see ``split``) its
        norm2 input and frozen output."""
        t = self.trunk
        with torch.no_grad():
            x = t.patch_embed(images)
            x = x + t._get_pos_embed(x.shape[1:3])
            outs = []
            for i in range(self.first):
                x = t.blocks[i](x)
                if self._stage_out(i):
                    level = len(outs)
                    out = x.permute(0, 3, 1, 2)
                    if level in self.frozen:  # the decoder's high-resolution input
                        out = self.high_convs[level](self._lateral(level, out))
                    outs.append(out)
            if not self.split:
                return (x,), outs
            block, mid = t.blocks[self.first], []
            hook = block.norm2.register_forward_pre_hook(lambda _m, args: mid.append(args[0]))
            try:
                block(x)
            finally:
                hook.remove()
            x = mid[0]  # as the block: x + drop_path(mlp(norm2(x))), drop_path the identity
            return (x, x + block.mlp(block.norm2.forward(x))), outs

    def _lateral(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return self.neck.convs[len(self.neck.convs) - 1 - level](x)

    def _neck(self, outs: list) -> list:
        """The FPN neck's outputs (SAM2's ``FpnNeck`` without position encodings), the
        frozen levels as they are."""
        neck = self.neck
        feats = [None] * len(outs)
        prev = None
        for i in range(len(outs) - 1, -1, -1):
            if i in self.frozen:
                feats[i] = outs[i]
                continue
            lateral = self._lateral(i, outs[i])
            if i in neck.fpn_top_down_levels and prev is not None:
                nearest = neck.fpn_interp_model == "nearest"
                top_down = F.interpolate(prev.to(dtype=torch.float32), scale_factor=2.0,
                                         mode=neck.fpn_interp_model,
                                         align_corners=None if nearest else False,
                                         antialias=False)  # fmt: skip
                prev = lateral + top_down
                if neck.fuse_type == "avg":
                    prev /= 2
            else:
                prev = lateral
            feats[i] = prev
        return feats

    def _get(self, keys, images_fn):
        fresh = {}
        missing = [j for j, k in enumerate(keys) if k not in self._cache]
        missing = [j for j in missing if keys.index(keys[j]) == j]  # each image once
        if missing:
            self.misses += len(missing)
            state, outs = self._prefix(images_fn(missing))
            for r, j in enumerate(missing):
                item = tuple([v[r : r + 1].clone() for v in vs] for vs in (state, outs))
                fresh[keys[j]] = item
                self._put(keys[j], item)
        self.hits += len(keys) - len(missing)
        items = []
        for k in keys:
            if k in fresh:
                items.append(fresh[k])
            else:
                self._cache.move_to_end(k)
                items.append(self._cache[k][0])
        state, outs = (
            [torch.cat([it[part][s] for it in items]) for s in range(len(items[0][part]))]
            for part in (0, 1)
        )
        return state, outs

    def _put(self, key, item) -> None:
        size = sum(v.numel() * v.element_size() for v in (*item[0], *item[1]))
        if size > self.cache_bytes:
            return
        while self._bytes + size > self.cache_bytes and self._cache:
            _, (_, old) = self._cache.popitem(last=False)
            self._bytes -= old
        self._cache[key] = (item, size)
        self._bytes += size

    def encode(self, keys, images_fn) -> Features:
        """Features of the images ``keys`` (``images_fn(rows)`` makes the model inputs of
        those rows, called only for images whose prefix is not cached)."""
        state, outs = self._get(list(keys), images_fn)
        t = self.trunk
        start = self.first
        if self.split:  # block f: its frozen output plus its adapter (as the adapter hook)
            mid, frozen = state
            x = frozen + t.blocks[start].adapter(mid)
            if self._stage_out(start):
                outs.append(x.permute(0, 3, 1, 2))
            start += 1
        else:
            x = state[0]
        for i in range(start, len(t.blocks)):
            x = t.blocks[i](x)
            if self._stage_out(i):
                outs.append(x.permute(0, 3, 1, 2))
        feats = self._neck(outs)
        scalp = self.encoder.scalp
        if scalp > 0:
            feats = feats[:-scalp]
        high = [f if i in self.frozen else self.high_convs[i](f) for i, f in enumerate(feats[:2])]
        return Features(tuple(high), feats[-1])

    @property
    def nbytes(self) -> int:
        return self._bytes
