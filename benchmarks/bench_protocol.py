"""Benchmark 1: napari-sansa versus the authors' evaluation protocol, same weights and machine.

The authors' code runs one episode [references..., target] per target and per
class, encoding every frame of the episode each time, in fp32, one episode at a
time. napari-sansa encodes each image once, decodes the references once per
class and batches the rest. Both ways run here on the same random-weight model
(SAM2 Hiera-tiny + adapters at 1024 px by default); their logits must agree to
float rounding.

    python benchmarks/bench_protocol.py [--targets 8 --shots 1 --classes 2] [--json out.json]
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

import napari_sansa as ns
from common import blob_mask, images, parser, random_model, report, sync, timed
from napari_sansa.core.fusion import fuse_labels, sigmoid
from napari_sansa.core.images import to_float_rgb
from napari_sansa.core.preprocess import image_to_input, mask_to_input


def authors_protocol(model, refs, targets, classes, input_size):
    """One [refs..., target] episode per target and per class, nothing reused."""
    eng, size, dev = model.engine, model.image_size, model.device
    out = []
    with torch.inference_mode():
        for target in targets:
            logits = {}
            for c in classes:
                frames = [r.image for r in refs] + [target]
                batch = torch.stack(
                    [image_to_input(to_float_rgb(f), size, input_size, dev) for f in frames]
                )
                feats = eng.encode(batch)
                entries = {}
                for k, ref in enumerate(refs):
                    (mask,) = [p.mask for p in ref.prompts if p.label == c]
                    m = mask_to_input(mask, size, input_size, dev)
                    decoded = eng.decode_mask_prompt(feats[k], m)
                    entries[k] = eng.memory(feats[k], decoded)
                t = len(refs)
                res = eng.decode_with_memory(feats[t], eng.gather(entries, t))
                eng.memory(feats[t], res)  # the authors' loop encodes every frame's memory
                up = F.interpolate(
                    res.low_res, size=target.shape[:2], mode="bilinear", align_corners=False
                )
                logits[c] = up[0, 0].cpu().numpy()
            out.append(logits)
    return out


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--config", default="sam2_hiera_t", help="SAM2 size (sam2_hiera_t ... _l)")
    args = p.parse_args()
    torch.manual_seed(0)
    model = random_model(args.config, device=args.device, precision="fp32", cache_bytes=0)
    shape = (args.size, args.size)
    imgs = images(args.shots + args.targets, shape)
    refs = []
    for k in range(args.shots):
        prompts = [
            ns.Mask(
                blob_mask(shape, (shape[0] * (0.25 + 0.2 * c), shape[1] * 0.5), shape[0] // 8),
                label=c + 1,
            )
            for c in range(args.classes)
        ]
        refs.append(ns.Reference(imgs[k], prompts))
    targets = imgs[args.shots :]
    classes = list(range(1, args.classes + 1))
    # warm-up both paths once on one target (allocator, thread pools)
    authors_protocol(model, refs, targets[:1], classes, 640)
    model.segment(refs, targets[:1])
    parts: dict = {}
    eng = model.engine
    for name in ("encode", "decode_with_memory"):  # where napari-sansa's time goes
        real = getattr(eng, name)

        def wrapped(*a, _real=real, _name=name, **k):
            with timed(parts, _name, args.device):
                return _real(*a, **k)

        setattr(eng, name, wrapped)
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        sync(args.device)
        t0 = time.perf_counter()
        theirs = authors_protocol(model, refs, targets, classes, 640)
        parts.clear()
        sync(args.device)
        t_theirs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = model.segment(refs, targets)
        sync(args.device)
        t_ours.append(time.perf_counter() - t0)
    diff = max(
        float(np.abs(o.logits[c] - t[c]).max())
        for o, t in zip(ours, theirs, strict=True)
        for c in classes
    )
    same_labels = float(
        np.mean(
            [
                (o.labels == fuse_labels({c: sigmoid(t[c]) for c in classes}, 0.5)).mean()
                for o, t in zip(ours, theirs, strict=True)
            ]
        )
    )
    a, b = min(t_theirs), min(t_ours)
    rows = [
        (
            "setting",
            (
                f"N={args.targets} targets, k={args.shots}, C={args.classes}, "
                f"{args.size}px images, {args.config}@1024 random weights, {args.device}, fp32"
            ),
        ),
        ("authors' protocol", f"{a:.2f} s"),
        ("napari-sansa", f"{b:.2f} s"),
        ("speed-up", f"{a / b:.2f}x (goal >= 3x)"),
        (
            "napari-sansa's time",
            (
                f"encoder {parts.get('encode', 0):.1f} s "
                f"({args.shots + args.targets} images once), "
                f"memory attention + decoder {parts.get('decode_with_memory', 0):.1f} s "
                f"({args.targets * args.classes} target-class pairs, the same work in both ways)"
            ),
        ),
        ("max |logit difference|", f"{diff:.2e}"),
        ("label pixels that agree", f"{100 * same_labels:.4f} %"),
    ]
    report(
        "Benchmark 1: authors' protocol vs napari-sansa",
        rows,
        {
            "authors_s": a,
            "ours_s": b,
            "speedup": a / b,
            "max_logit_diff": diff,
            "label_agreement": same_labels,
            "targets": args.targets,
            "shots": args.shots,
            "classes": args.classes,
            "size": args.size,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
