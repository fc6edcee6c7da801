"""Fine-tuning: time and peak memory of a training step, and proof that a short run learns.

1. Speed (``--part speed``): a training step of napari-sansa against "the plain way" on the
   same model, the same episodes and the same machine, in one run. The plain way is the
   authors' training step as their code runs it, reimplemented here (their repository and
   its SAM2 fork are not part of this project; /work/scratch/parity_train/harness.py runs
   their actual code for the loss and gradient parity): every image goes through the whole
   image encoder at every step, and the memory attention and mask decoder use the unfused
   math attention kernel, as their fork forces. napari-sansa computes the frozen parts of
   the encoder once per image (cached: the stages before the first adapter, the decoder's
   high-resolution maps, the first adapted block but for its adapter; see
   src/napari_sansa/core/training/encoder.py) and uses PyTorch's fused attention, except
   for the memory attention while training on the CPU, which runs the math kernel's maths
   in a leaner autograd function and draws its dropout noise on every core
   (src/napari_sansa/core/training/attention.py, dropout.py). Everything else is the same
   code (the same ``Finetuning`` object drives both; only its encoder, the attention
   kernels and the dropout generator differ), so the episodes are identical and the losses
   differ by the dropout draws only; without dropout they are the same (checked at the
   end: one step of each with ``dropout=0``). The steps of the variants are timed
   interleaved in one process (the same machine load for all), after the cache is filled
   (the one-off prefix cost per image is printed too); peak memory (ru_maxrss) is measured
   with each variant alone in a process of its own.

       python benchmarks/bench_finetune.py --part speed --image-size 1024 --steps 3

   ``--authors DIR`` (a checkout of ClaudiaCuttano/SANSA, with ``einops`` importable) also
   times the authors' own training step, their code, on the same episodes (see
   authors_step.py); its losses too differ from the others' by the dropout draws only.

2. Learning (``--part learn``): bright ellipses on texture (64 x 64 images), a random-weight
   Hiera-tiny at 256 px; a short fine-tuning run; prints the held-out episode loss and IoU
   at the start and the end (goal: loss down by at least 10 %, IoU up).

       python benchmarks/bench_finetune.py --part learn

3. Learning over tasks (``--part tasks``): colour classes (one to three, each a colour) as
   blobs on a textured background, 64, 256 and 512 px images, mask and box supports, with
   the ellipses of part 2 beside them; a random-weight Hiera-tiny at 256 px, eight frames
   (two held out). Each task runs ``finetune_iter`` with the defaults that matter here
   (lr, batch 2, 1 shot) and prints the held-out IoU before and after and which adapters
   the run kept (the tuned ones only when they did better on the held-out frames).
   ``--weight-seeds 0 1 2`` repeats every task with other random weights; ``--probe``
   adds a per-pixel linear probe (logistic regression) of the class on the frozen image
   encoder's features (the training frames fit it, the held-out frames score it): what
   the random features carry about the task, whatever the adapters do.

       python benchmarks/bench_finetune.py --part tasks --steps 30 --lr 1e-3 --probe --threads 1
       python benchmarks/bench_finetune.py --part tasks --weight-seeds 1 2 --tasks 2 3 --threads 1
       python benchmarks/bench_finetune.py --part tasks --tasks 2 3 --input-size 640 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ellipse_frame(seed: int, shape=(64, 64)):
    r = np.random.default_rng(seed)
    img = (r.random((*shape, 3)) * 90).astype(np.uint8)
    lab = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = r.integers(shape[0] // 4, 3 * shape[0] // 4, 2)
    ry, rx = r.integers(shape[0] // 10, shape[0] // 5, 2)
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    img[m] = np.clip(img[m].astype(int) + 150, 0, 255)
    lab[m] = 1
    return img, lab


COLOURS = ((230, 60, 50), (60, 200, 70), (70, 90, 240))  # class 1, 2, 3


def colour_frame(seed: int, size: int, classes: int):
    """Blobs of one colour per class (two to four each) on a grey-brown textured background."""
    from scipy.ndimage import gaussian_filter

    r = np.random.default_rng(seed)
    noise = gaussian_filter(r.random((size, size)), size / 32) + 0.5 * r.random((size, size))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    img = np.stack([90 + 90 * noise, 80 + 80 * noise, 60 + 70 * noise], -1)
    lab = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for c in range(1, classes + 1):
        for _ in range(int(r.integers(2, 5))):
            cy, cx = r.integers(size // 10, size - size // 10, 2)
            ry, rx = r.uniform(size / 16, size / 8, 2)
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            shade = 0.75 + 0.25 * noise[m, None]
            img[m] = np.asarray(COLOURS[c - 1]) * shade
            lab[m] = c
    for c in range(1, classes + 1):  # every class in every frame
        if not (lab == c).any():
            lab[:4, 4 * c : 4 * c + 4] = c
    return np.clip(img, 0, 255).astype(np.uint8), lab


def _model(folder, image_size, seed=0):
    import napari_sansa as ns
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    sam2, adapters = write_random_checkpoints(folder, "sam2_hiera_t", image_size=image_size,
                                              seed=seed)  # fmt: skip
    return ns.load_model(config="sam2_hiera_t", sam2_checkpoint=sam2, adapter_checkpoint=adapters,
                         device="cpu", image_size=image_size)  # fmt: skip


class _PlainEncoder:
    """Every stage at every step (the encoder of the authors' training step)."""

    def __init__(self, engine):
        self.engine = engine

    def encode(self, keys, images_fn):
        return self.engine.encode(images_fn(list(range(len(keys)))))


def _runs(variants, image_size: int, steps: int, authors=None, dropout=None):
    """One ``Finetuning`` per variant on the same model, data and seed (same episodes)."""
    import napari_sansa as ns

    folder = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    model = _model(folder, image_size)
    data = [ellipse_frame(s, (640, 640)) for s in range(4)]
    runs, prefix = {}, 0.0
    for variant in variants:
        run = ns.finetune_iter(model, data, steps=steps, batch_size=1, shots=1, seed=0,
                               dropout=dropout)  # fmt: skip
        keys = list(range(len(data)))
        if variant == "authors":
            from authors_step import AuthorsRun

            run = AuthorsRun(authors, folder / "sam2.pt", folder / "adapters.pth", image_size, run)
        elif variant == "plain":
            from napari_sansa.core.training.attention import KernelWhileTraining

            run.encoder = _PlainEncoder(run.engine)
            run._kernels.remove()  # the authors' fork: math in both (added back just below)
            for part in (run.engine.memory_attention, run.engine.mask_decoder):
                KernelWhileTraining(part)
        else:
            t0 = time.perf_counter()
            run.encoder._get(keys, run._inputs(keys))  # every image's frozen prefix, once
            prefix = (time.perf_counter() - t0) / len(keys)
        runs[variant] = run
    return runs, prefix


def _memory_child(variant: str, image_size: int, threads: int, authors=None) -> dict:
    import torch

    torch.set_num_threads(threads)
    runs, _ = _runs([variant], image_size, 2, authors)
    losses = [s.loss for s in runs[variant]]
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "losses": losses}


def speed(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    peaks = {}
    variants = ("ours", "plain", "authors") if args.authors else ("ours", "plain")
    for variant in variants:  # peak memory: each variant in a process of its own
        cmd = [sys.executable, __file__, "--child", variant, "--image-size", str(args.image_size),
               "--threads", str(args.threads)]  # fmt: skip
        if args.authors:
            cmd += ["--authors", args.authors]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[variant] = json.loads(out.strip().splitlines()[-1])
    # time: both variants in this process, their steps interleaved (same machine load)
    runs, prefix = _runs(variants, args.image_size, args.steps + 1, args.authors)
    times = {v: [] for v in variants}
    losses = {v: [] for v in variants}
    for _ in range(args.steps + 1):
        for variant, run in runs.items():
            stats = next(run)
            times[variant].append(stats.seconds)
            losses[variant].append(stats.loss)
    # the first step of each warms up allocators and kernels: not timed
    t_ours, t_plain = np.median(times["ours"][1:]), np.median(times["plain"][1:])
    del runs
    check, _ = _runs(("ours", "plain"), args.image_size, 1, dropout=0.0)
    plain_loss = [next(r).loss for r in check.values()]
    same = bool(np.isclose(*plain_loss, rtol=1e-5))
    p_ours, p_plain = peaks["ours"]["peak"], peaks["plain"]["peak"]
    print(f"Hiera-tiny at {args.image_size} px, CPU fp32, {args.threads} thread(s), 1 episode of "
          f"1 support per step, {args.steps} timed steps each (after one warm-up), "
          "interleaved")  # fmt: skip
    print(f"  napari-sansa: {t_ours:.2f} s/step (frozen prefix once per image: {prefix:.2f} s), "
          f"peak RSS {p_ours / 2**30:.2f} GiB")  # fmt: skip
    print(f"  plain way:    {t_plain:.2f} s/step, peak RSS {p_plain / 2**30:.2f} GiB")
    print(f"  speed-up {t_plain / t_ours:.2f}x (goal >= 1.3x); peak memory ratio "
          f"{p_ours / p_plain:.2f} (goal <= 1)")  # fmt: skip
    print(f"  without dropout, one step: loss {plain_loss[0]:.6f} (napari-sansa), "
          f"{plain_loss[1]:.6f} (plain way): the same: {same}")  # fmt: skip
    if args.authors:
        t_auth, p_auth = np.median(times["authors"][1:]), peaks["authors"]["peak"]
        print(f"  the authors' own step: {t_auth:.2f} s/step, peak RSS {p_auth / 2**30:.2f} GiB; "
              f"speed-up {t_auth / t_ours:.2f}x, peak memory ratio "
              f"{p_ours / p_auth:.2f}")  # fmt: skip
    for v in variants:
        print(f"  step times {v}:", [round(t, 2) for t in times[v]], "losses:",
              [round(x, 4) for x in losses[v]])  # fmt: skip


def learn(args) -> None:
    import torch

    import napari_sansa as ns

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    model = _model(folder, 256)
    data = [ellipse_frame(s) for s in range(10)]
    run = ns.finetune_iter(model, data, steps=args.steps, lr=args.lr, batch_size=2,
                           input_size=64, validation=0.3, validate_every=5, seed=0)  # fmt: skip
    curve = []
    t0 = time.perf_counter()
    for s in run:
        if s.val_loss is not None:
            curve.append((s.step, s.val_loss, s.val_iou))
            print(f"  step {s.step:3d}: held-out loss {s.val_loss:.4f}, IoU {s.val_iou:.3f}",
                  flush=True)  # fmt: skip
    (_, l0, i0), (_, l1, i1) = curve[0], curve[-1]
    drop = (l0 - l1) / l0
    print(f"random-weight Hiera-tiny at 256 px, {len(run.train_idx)} training and "
          f"{len(run.val_idx)} held-out ellipse images (64 px), lr {args.lr}, batch 2, "
          f"{args.steps} steps in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(f"  held-out episode loss {l0:.4f} -> {l1:.4f} ({100 * drop:.1f} % lower; goal >= 10 %)")
    print(f"  held-out IoU          {i0:.3f} -> {i1:.3f} ({'up' if i1 > i0 else 'NOT up'})")


TASKS = (  # name, frame maker, image size, classes, support prompt
    ("ellipses", "ellipse", 64, 1, "mask"),
    ("colour", "colour", 64, 1, "mask"),
    ("colour", "colour", 64, 2, "mask"),
    ("colour", "colour", 256, 2, "mask"),
    ("colour", "colour", 256, 3, "box"),
    ("colour", "colour", 512, 2, "box"),
    ("colour", "colour", 512, 1, "mask"),
)


def _task_data(kind, size, classes, n=8):
    if kind == "ellipse":
        return [ellipse_frame(s, (size, size)) for s in range(n)]
    return [colour_frame(100 + s, size, classes) for s in range(n)]


def _probe(model, data, train_idx, val_idx) -> float:
    """Held-out IoU (mean over classes) of a per-pixel logistic regression of the class on
    the frozen encoder's features (the lowest-resolution level, upsampled to 64 x 64)."""
    import torch

    from napari_sansa.core.images import to_float_rgb
    from napari_sansa.core.preprocess import image_to_input

    grid = 64
    feats, labs = [], []
    with torch.no_grad():
        for img, lab in data:
            x = image_to_input(to_float_rgb(img), model.image_size, None, "cpu")[None]
            f = model.engine.encode(x)
            levels = [*f.high_res, f.top]
            up = [torch.nn.functional.interpolate(v.float(), (grid, grid), mode="bilinear")
                  for v in levels]  # fmt: skip
            feats.append(torch.cat(up, 1)[0].flatten(1).T.numpy())
            rows = (np.arange(grid) * lab.shape[0] / grid).astype(int)
            cols = (np.arange(grid) * lab.shape[1] / grid).astype(int)
            labs.append(lab[rows][:, cols].ravel())
    x_tr = np.concatenate([feats[i] for i in train_idx])
    y_tr = np.concatenate([labs[i] for i in train_idx])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    k = int(max(max(lab.max() for _, lab in data), 1)) + 1
    w = torch.zeros(x_tr.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    xt, yt = torch.from_numpy((x_tr - mu) / sd).float(), torch.from_numpy(y_tr).long()
    opt = torch.optim.LBFGS([w, b], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    ious = []
    for i in val_idx:
        pred = (torch.from_numpy((feats[i] - mu) / sd).float() @ w + b).argmax(1).numpy()
        for c in range(1, k):
            t, p = labs[i] == c, pred == c
            if t.any():
                ious.append((t & p).sum() / (t | p).sum())
    return float(np.mean(ious))


def tasks(args) -> None:
    import torch

    import napari_sansa as ns

    torch.set_num_threads(args.threads)
    rows = []
    for wseed in args.weight_seeds:
        folder = Path(tempfile.mkdtemp(prefix="bench_finetune_"))
        model = _model(folder, 256, seed=wseed)
        for t, (name, kind, size, classes, prompt) in enumerate(TASKS):
            if args.tasks and t not in args.tasks:
                continue
            data = _task_data(kind, size, classes)
            t0 = time.perf_counter()
            run = ns.finetune_iter(model, data, steps=args.steps, lr=args.lr, batch_size=2,
                                   prompt=prompt, input_size=args.input_size, validation=0.3,
                                   validate_every=max(1, args.steps // 3), seed=0)  # fmt: skip
            ious = [s.val_iou for s in run if s.val_iou is not None]
            run.result()
            rep = run.outcome
            probe = _probe(model, data, run.train_idx, run.val_idx) if args.probe else None
            row = {"weights": wseed, "task": name, "px": size, "classes": classes,
                   "support": prompt, "iou_start": ious[0], "iou_best_tuned": max(ious[1:]),
                   "iou_last": ious[-1], "kept": rep.kept, "kept_step": rep.step,
                   "probe": probe, "seconds": time.perf_counter() - t0}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nrandom-weight Hiera-tiny at 256 px, CPU, {args.steps} steps, lr {args.lr}, batch "
          f"2, 1 shot, 8 frames (2 held out), input_size {args.input_size}")  # fmt: skip
    print("| weights | task | px | classes | supports | held-out IoU start | best tuned | last "
          "| kept | linear probe IoU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        probe = "" if r["probe"] is None else f"{r['probe']:.3f}"
        kept = f"tuned (step {r['kept_step']})" if r["kept"] == "tuned" else "original"
        print(f"| {r['weights']} | {r['task']} | {r['px']} | {r['classes']} | {r['support']} | "
              f"{r['iou_start']:.3f} | {r['iou_best_tuned']:.3f} | {r['iou_last']:.3f} | "
              f"{kept} | {probe} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("speed", "learn", "tasks", "all"), default="all")
    ap.add_argument("--weight-seeds", type=int, nargs="+", default=[0],
                    help="(tasks) seeds of the random weights")  # fmt: skip
    ap.add_argument("--probe", action="store_true", help="(tasks) linear probe of the features")
    ap.add_argument("--tasks", type=int, nargs="+", help="(tasks) which, by number (default all)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="(tasks) the resize (default: none, the images' own size)")  # fmt: skip
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--authors", metavar="DIR", help="also time the authors' own step (see "
                    "authors_step.py): a checkout of ClaudiaCuttano/SANSA")  # fmt: skip
    ap.add_argument("--child", choices=("ours", "plain", "authors"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):
            res = _memory_child(args.child, args.image_size, args.threads, args.authors)
        print(json.dumps(res))
        return
    if args.part in ("speed", "all"):
        speed(argparse.Namespace(**{**vars(args), "steps": args.steps or 3}))
    if args.part in ("learn", "all"):
        learn(argparse.Namespace(**{**vars(args), "steps": args.steps or 30}))
    if args.part in ("tasks", "all"):
        tasks(argparse.Namespace(**{**vars(args), "steps": args.steps or 30}))


if __name__ == "__main__":
    main()
