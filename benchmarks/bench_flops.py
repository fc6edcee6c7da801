"""Where the time goes on the CPU: FLOPs per target, and how close each part gets to the
machine's matrix-product peak, in fp32 and bf16 (issue 21).

A SANSA with random weights (``--config``, default SAM2 Hiera-tiny, at ``--size``; written
to a temporary folder, no download). Per target of a one-reference run, three parts:

* ``encoder``: the image encoder (Hiera trunk with adapters, FPN neck, the decoder's
  high-res projections) on one image;
* ``memory attention``: the target's features attending to the reference's memory
  (one memory frame and its object-pointer tokens);
* ``decoder``: the prompt encoder and mask decoder on the conditioned features.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions, 2 per multiply-add; attention counted as its two products). Each part is
timed in three ways, repeats interleaved, medians printed:

* ``fp32``: fp32 weights, no autocast (what ``precision="fp32"`` runs);
* ``autocast``: fp32 weights under ``torch.autocast(bfloat16)`` (casts per operation: what
  ``precision="bf16"`` ran on the CPU before 0.2.0, and still runs for memory attention);
* ``bf16``: the part's weights cast to bf16 once, its inputs cast once, autocast off (what
  0.2.0 runs for the encoder with ``precision="bf16"`` on the CPU; the decoder cannot run
  so, and 0.2.0 runs it in fp32).

The three ways are then summed per target as each precision runs the parts: fp32, bf16
before 0.2.0 (all autocast) and bf16 in 0.2.0 (encoder bf16, memory attention autocast,
decoder fp32), against the time the target's FLOPs take at the bf16 peak.

The peak is a square matrix product (``--matmul``, default 2048) in fp32 and bf16,
measured in the same run, interleaved with the parts; each part's rate is given as a
fraction of the peak of its precision. End to end, ``model.segment`` of one reference
(3 classes) and ``--targets`` targets is timed with ``precision="fp32"`` and
``precision="bf16"``, and on the same inputs the largest logit difference between them
and the fraction of label pixels that agree are reported (random weights: logits of
about +-10, see ``write_random_checkpoints``; reported, not judged against a threshold).

A benchmark, not a test: it prints, it asserts nothing. Timings are only worth quoting
from a machine nothing else uses:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_flops.py --size 1024 --repeats 5 \\
        --json flops.json
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_flops.py --config sam2_hiera_l \\
        --size 1024 --repeats 3

A quick check that it works: ``--size 256 --repeats 1 --targets 1 --matmul 512``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import images, interleaved_medians, parser, random_model, report, three_prompt_reference
from napari_sansa.core.cpu_bf16 import cpu_bf16_units

MODES = ("fp32", "autocast", "bf16")


def _args():
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--config", default="sam2_hiera_t")
    p.add_argument("--size", type=int, default=None, help="model input side (default: config's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--targets", type=int, default=2, help="targets of the end-to-end runs")
    p.add_argument("--matmul", type=int, default=2048, help="side of the peak's matrices")
    return p.parse_args()


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _cast(x, dtype):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(dtype)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    return x


class Parts:
    """The three parts of a target as callables, on fp32 and on bf16 copies of the network."""

    def __init__(self, model, other):
        """``model``, ``other``: two fp32 loads of the same weights (``other`` is cast)."""
        self.engine = model.engine
        self.sam = {"fp32": model.sam, "bf16": other.sam.to(torch.bfloat16)}
        size = model.image_size
        g = torch.Generator().manual_seed(0)
        self.image = torch.randn(1, 3, size, size, generator=g)
        mask = torch.zeros(1, 1, size, size)
        mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1
        with torch.inference_mode():
            feats = self.engine.encode(self.image)
            ref = self.engine.decode_mask_prompt(feats, mask)
            entry = self.engine.memory(feats, ref)
            self.feats = feats
            self.memory = self.engine.gather({0: entry}, 1)
            top = feats.top
            b, c, h, w = top.shape
            self.curr = top.flatten(2).permute(2, 0, 1)
            self.curr_pos = self.engine.top_pos(top)
            self.pix = top  # the decoder's input has the top level's shape

    def call(self, part: str, mode: str):
        """``fn()`` that runs ``part`` as ``mode`` runs it."""
        sam = self.sam["bf16" if mode == "bf16" else "fp32"]
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        if part == "encoder":
            args = (_cast(self.image, dtype),)

            def run(x):
                out = sam.forward_image(x)
                return out["backbone_fpn"][-1]
        elif part == "memory attention":
            mem, mem_pos, n_ptr = self.memory
            args = _cast((self.curr, self.curr_pos, mem, mem_pos), dtype) + (n_ptr,)

            def run(curr, pos, mem, mem_pos, n_ptr):
                return sam.memory_attention(
                    curr=[curr], curr_pos=[pos], memory=mem, memory_pos=mem_pos,
                    num_obj_ptr_tokens=n_ptr,
                )  # fmt: skip
        else:
            args = _cast((self.pix, list(self.feats.high_res)), dtype)

            def run(pix, high_res):
                b = pix.shape[0]
                coords = torch.zeros(b, 1, 2)
                labels = -torch.ones(b, 1, dtype=torch.int32)
                sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None,
                                                       masks=None)  # fmt: skip
                return sam.sam_mask_decoder(
                    image_embeddings=pix,
                    image_pe=sam.sam_prompt_encoder.get_dense_pe().to(pix.dtype),
                    sparse_prompt_embeddings=sparse.to(pix.dtype),
                    dense_prompt_embeddings=dense.to(pix.dtype),
                    multimask_output=True,
                    repeat_image=False,
                    high_res_features=high_res,
                )[0]

        def fn():
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                        enabled=mode == "autocast"):  # fmt: skip
                return run(*args)

        return fn


def _matmul(n: int, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    return lambda: a @ b


def _end_to_end(args, model, targets, ref):
    preds = {}
    fns = {
        name: (lambda m=m, name=name: preds.__setitem__(name, m.segment([ref], targets)))
        for name, m in model.items()
    }
    med = interleaved_medians(fns, max(1, args.repeats))  # fp32, bf16, fp32, ...
    worst, agree = 0.0, []
    for p32, p16 in zip(preds["fp32"], preds["bf16"], strict=True):
        for c in p32.logits:
            worst = max(worst, float(np.abs(p32.logits[c] - p16.logits[c]).max()))
        agree.append(float((p32.labels == p16.labels).mean()))
    return med, worst, float(np.mean(agree))


def main():
    args = _args()
    torch.manual_seed(0)
    units = cpu_bf16_units()
    fp32 = random_model(args.config, args.size, precision="fp32", cache_bytes=0)
    bf16 = random_model(args.config, args.size, precision="bf16", cache_bytes=0)
    parts = Parts(fp32, random_model(args.config, args.size, precision="fp32", cache_bytes=0))
    names = ("encoder", "memory attention", "decoder")
    flops = {p: _flops(parts.call(p, "fp32")) for p in names}
    fns = {(p, m): parts.call(p, m) for p in names for m in MODES}
    peak_fns = {m: _matmul(args.matmul, d) for m, d in (("fp32", torch.float32),
                                                        ("bf16", torch.bfloat16))}  # fmt: skip
    failed = {}
    for fn in (*fns.values(), *peak_fns.values()):  # warm-up
        try:
            fn()
        except RuntimeError as exc:  # a part that cannot run natively in bf16: said
            failed[next(k for k, v in fns.items() if v is fn)] = str(exc).splitlines()[0]
    timed = {("peak", m): fn for m, fn in peak_fns.items()}
    timed.update({key: fn for key, fn in fns.items() if key not in failed})
    med = interleaved_medians(timed, args.repeats)
    peak = {m: 2 * args.matmul**3 / med["peak", m] for m in ("fp32", "bf16")}

    size = fp32.image_size
    imgs = images(1 + args.targets, shape=(size // 2, size // 2))
    ref = three_prompt_reference(imgs[0])
    e2e, worst, agree = _end_to_end(args, {"fp32": fp32, "bf16": bf16}, imgs[1:], ref)

    rows = [
        ("config / input", f"{args.config} at {size} px, threads {torch.get_num_threads()}"),
        ("CPU bf16 units", units or "none"),
        ("matmul peak fp32", f"{peak['fp32'] / 1e9:.1f} GFLOP/s ({args.matmul}^2, median)"),
        ("matmul peak bf16", (f"{peak['bf16'] / 1e9:.1f} GFLOP/s "
                              f"({peak['bf16'] / peak['fp32']:.2f}x fp32)")),
    ]  # fmt: skip
    results = {"peak_flops": peak, "parts": {}, "units": units}
    for p in names:
        row = {"gflop": flops[p] / 1e9}
        cells = [f"{flops[p] / 1e9:.2f} GFLOP"]
        for m in MODES:
            if (p, m) in failed:
                cells.append(f"{m}: fails ({failed[p, m]})")
                continue
            t = med[p, m]
            frac = flops[p] / t / peak["fp32" if m == "fp32" else "bf16"]
            row[m] = {"s": t, "peak_fraction": frac}
            speed = med[p, "fp32"] / t
            cells.append(f"{m} {t * 1e3:.0f} ms ({speed:.2f}x fp32, {100 * frac:.0f}% of peak)")
        results["parts"][p] = row
        rows.append((p, "; ".join(cells)))
    total = sum(flops.values())
    ideal = total / peak["bf16"]
    paths = {  # how each precision runs the three parts
        "fp32": ("fp32", "fp32", "fp32"),
        "bf16 before 0.2.0 (autocast)": ("autocast", "autocast", "autocast"),
        "bf16 in 0.2.0": ("bf16", "autocast", "fp32"),
    }
    results["paths"] = {}
    for name, how in paths.items():
        if any((p, m) in failed for p, m in zip(names, how, strict=True)):
            continue
        t = sum(med[p, m] for p, m in zip(names, how, strict=True))
        results["paths"][name] = t
        speed = results["paths"]["fp32"] / t
        text = f"{t * 1e3:.0f} ms ({speed:.2f}x fp32, {t / ideal:.1f}x the time at the bf16 peak)"
        rows.append((f"per target, {name}", text))
    rows += [
        ("FLOPs per target", f"{total / 1e9:.2f} GFLOP (at the bf16 peak: {ideal * 1e3:.0f} ms)"),
        (f"end to end, 1 ref + {args.targets} targets",
         (f"fp32 {e2e['fp32']:.2f} s, bf16 {e2e['bf16']:.2f} s "
          f"({e2e['fp32'] / e2e['bf16']:.2f}x)")),
        ("bf16 vs fp32 logits", f"largest difference {worst:.3g}"),
        ("bf16 vs fp32 labels", f"{100 * agree:.2f}% of pixels agree"),
    ]  # fmt: skip
    results.update(end_to_end_s=e2e, max_logit_diff=worst, label_agreement=agree)
    report(f"Where the time goes ({args.config}, CPU)", rows, results, args.json)


if __name__ == "__main__":
    main()
