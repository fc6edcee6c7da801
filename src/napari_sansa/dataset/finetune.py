"""``napari-sansa finetune``: tune the adapters on annotated image files, resumably.

    napari-sansa finetune --train IMAGE LABELS [--train ...] | --train FOLDER
        (--model NAME | --sam2-checkpoint FILE [--adapter-checkpoint FILE] [--config C])
        --steps N --out adapters.pth [--validation 0.2] [options]

The run's state (adapters, optimiser, schedule, step, random state, best adapters)
is saved atomically to ``OUT.state`` every ``--save-every`` steps and when the run is
interrupted; the same command run again continues from it and ends where an
uninterrupted run would. ``OUT`` is written once, atomically, at the end: the adapters
with the highest IoU on the held-out images, the starting ones included (so a run that
made them worse writes the starting ones, and says so), or the last ones when no image
could be held out (said too); the state file is then removed. A non-finite loss stops
the run (exit status 1): ``OUT`` then gets the best finite tuned adapters when the
held-out images showed them better than the starting ones, else nothing, as the message
says.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE, TEXT_OPTIONS
from napari_sansa.dataset.io import not_a_regular_file

__all__ = ["add_parser", "find_pairs", "run"]

log = logging.getLogger("napari_sansa")

LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")
IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``finetune`` subcommand's parser, on ``sub`` (argparse subparsers)."""
    f = sub.add_parser(
        "finetune",
        help="tune the SANSA adapters on your annotated images",
        description="Fine-tune the adapters (SAM2 stays frozen) on fully annotated images, as "
        "the authors train them, and write them in the authors' format for --adapter-checkpoint.",
    )
    f.add_argument(
        "--train", nargs="+", action="append", default=[], metavar="PATH", required=True,
        help="IMAGE LABELS (label image: class ids, 0 = background), repeatable; or a folder "
        "of pairs (images/ + labels/ with the same names, or NAME.ext + NAME_labels.ext)",
    )  # fmt: skip
    f.add_argument("-o", "--out", required=True, metavar="FILE", help="adapter file to write")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    f.add_argument("--restart", action="store_true", help="ignore a saved state, start again")
    models = (
        ("--model", "registered model (default sansa-universal)", "NAME"),
        ("--config", "SAM2 config of local files, e.g. sam2_hiera_l", "NAME"),
        ("--sam2-checkpoint", "Meta's SAM2 weights file", "FILE"),
        ("--adapter-checkpoint", "SANSA adapter weights to start from", "FILE"),
    )
    for flag, text, meta in models:
        f.add_argument(flag, help=text, metavar=meta)
    f.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    f.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    f.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    from napari_sansa.core.threads import add_threads_option

    add_threads_option(f)
    # the options of the tuning (FinetuneOptions' fields, of the same names): absent from
    # the parsed arguments unless given, so that their defaults are FinetuneOptions' own
    tuning = argparse.SUPPRESS
    f.add_argument("--fresh-adapters", action="store_true", default=tuning,
                   help="start from new adapters")  # fmt: skip
    f.add_argument("--stages", type=int, nargs="+", default=tuning, help="(fresh) Hiera stages")
    f.add_argument("--channel-factor", type=float, default=tuning, help="(fresh) adapter width")
    numbers = (
        ("--steps", int, "optimisation steps (500)"),
        ("--lr", float, "learning rate (1e-4, the authors')"),
        ("--shots", int, "supports per episode: 1..SHOTS (1)"),
        ("--batch-size", int, "episodes per step (2)"),
        ("--validation", float, "fraction of the images held out to check the tuning (0.2)"),
        ("--validate-every", int, "steps between validations (default: 20 per run)"),
        ("--seed", int, "random seed (0)"),
    )
    for flag, kind, text in numbers:
        f.add_argument(flag, type=kind, default=tuning, help=text)
    f.add_argument("--prompt", default=tuning, help="mask, box, point, scribble or multi")
    f.add_argument("--input-size", default=tuning,
                   help=f"the authors' resize ({DEFAULT_INPUT_SIZE}) or 'none'")  # fmt: skip
    f.add_argument("--save-every", type=int, default=10, help="steps between saved states (10)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar, log lines only")
    return f


def find_pairs(folder) -> list[tuple[Path, Path]]:
    """(image, labels) files of a folder: ``images/`` + ``labels/`` with the same names, or
    ``NAME.ext`` beside ``NAME_labels.ext`` (also ``_label``, ``_mask``, ``_masks``)."""
    folder = Path(folder)

    def images_in(d):
        found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        for p in found:  # a pipe named like an image: refused, not dropped silently
            special = not_a_regular_file(p)
            if special:
                raise InvalidInputError(f"{special} (in the --train folder {folder})")
        return [p for p in found if p.is_file()]

    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        labels = {p.stem: p for p in images_in(folder / "labels")}
        pairs = [(p, labels[p.stem]) for p in images_in(folder / "images") if p.stem in labels]
    else:
        files = images_in(folder)
        by_stem = {p.stem: p for p in files}
        pairs = []
        for p in files:
            for suffix in LABEL_SUFFIXES:
                if p.stem.endswith(suffix) and p.stem[: -len(suffix)] in by_stem:
                    pairs.append((by_stem[p.stem[: -len(suffix)]], p))
                    break
    if not pairs:
        raise InvalidInputError(
            f"no image/label pairs in {folder}: put images in {folder / 'images'} and label "
            f"images of the same names in {folder / 'labels'}, or name each label image "
            "NAME_labels.ext beside NAME.ext"
        )
    return sorted(pairs)


def _training_files(groups) -> list[tuple[Path, Path]]:
    pairs = []
    for g in groups:
        if len(g) == 2:
            pairs.append((Path(g[0]), Path(g[1])))
        elif len(g) == 1 and Path(g[0]).is_dir():
            pairs += find_pairs(g[0])
        else:
            raise InvalidInputError(
                f"--train takes IMAGE LABELS or one folder of pairs, got {' '.join(g)}"
            )
    return pairs


def _load_model(args):
    from napari_sansa.core.models.loading import load_settings
    from napari_sansa.core.models.source import ModelSource

    files = (args.config, args.sam2_checkpoint, args.adapter_checkpoint)
    if args.model and any(files):
        raise InvalidInputError(
            "give --model NAME or --config/--sam2-checkpoint/--adapter-checkpoint, not both"
        )
    if any(files) and not args.sam2_checkpoint:
        raise InvalidInputError("--config/--adapter-checkpoint need --sam2-checkpoint FILE")
    common = {"device": args.device, "precision": args.precision, "image_size": args.image_size}
    common["threads"] = getattr(args, "threads", None)
    if args.sam2_checkpoint:
        files = {"config": args.config, "sam2_checkpoint": args.sam2_checkpoint,
                 "adapter_checkpoint": args.adapter_checkpoint}  # fmt: skip
        return load_settings(ModelSource(**files, **common))
    return load_settings(ModelSource(name=args.model or "sansa-universal", **common))


def _save_state(state: dict, path: Path) -> None:
    from napari_sansa.core.training.state import save_state

    save_state(state, path)


def _load_state(path: Path) -> dict:
    """The saved state at ``path``, read as data only (refused if damaged or unsafe)."""
    from napari_sansa.core.training.state import load_state
    from napari_sansa.core.training.trainer import STATE_FORMAT

    return load_state(path, fmt=STATE_FORMAT, restart=(
        "run the same command with --restart to start the fine-tuning afresh (the state "
        "file is then replaced), or remove it"
    ))  # fmt: skip


def run(args) -> int:
    """Run ``napari-sansa finetune`` with parsed ``args``; returns the exit status."""
    from napari_sansa.core.training.api import finetune_iter
    from napari_sansa.core.training.options import FinetuneOptions
    from napari_sansa.dataset.io import read_image, read_label_image

    out = Path(args.out).expanduser()
    if out.is_dir():
        raise InvalidInputError(f"--out {out} is a folder; give the .pth file to write")
    if out.exists() and not args.overwrite:
        raise InvalidInputError(f"{out} already exists: choose another --out or add --overwrite")
    given = {k: v for k, v in vars(args).items() if k in FinetuneOptions.names()}
    given = {k: TEXT_OPTIONS[k](v) if k in TEXT_OPTIONS else v for k, v in given.items()}
    options = FinetuneOptions.make(**given)  # checked before anything is read or loaded
    if args.save_every < 1:
        raise InvalidInputError("--save-every must be >= 1")
    state_path = out.with_name(out.name + ".state")
    if state_path.is_dir():
        raise InvalidInputError(
            f"{state_path} is a folder, but the run keeps its state in a file of that name: "
            "move the folder away or choose another --out"
        )
    resume = None
    if (state_path.exists() or state_path.is_symlink()) and not args.restart:
        resume = _load_state(state_path)  # before the slow part: a bad state is said at once
    pairs = _training_files(args.train)
    data = [(read_image(img), read_label_image(lab)) for img, lab in pairs]
    model = _load_model(args)
    try:
        tuning = finetune_iter(model, data, options, resume=resume)
    except InvalidInputError as exc:
        if resume is not None and "fine-tuning state" in str(exc):
            raise InvalidInputError(f"{exc} (saved in {state_path}; add --restart)") from None
        raise
    if resume is not None:
        log.info("resuming from %s (step %s)", state_path, tuning.step)
    log.info(
        "%d training and %d validation images, %d step(s)",
        len(tuning.train_idx), len(tuning.val_idx), tuning.settings.steps,
    )  # fmt: skip
    from napari_sansa.core.training import TrainingError

    try:
        _train(tuning, state_path, args)
    except TrainingError:
        tuned = tuning.result()
        state_path.unlink(missing_ok=True)  # the run cannot go on at this learning rate
        report = tuning.outcome
        if report.kept == "tuned" and report.checked:
            tuned.save_adapters(out, overwrite=True)
            wrote = f"wrote the best finite adapters (step {report.step}) to {out}"
        else:
            wrote = f"wrote nothing ({out} was not written)"
        log.error("%s: fine-tuning stopped there; %s; %s. Lower the learning rate (--lr) and "
                  "run again", tuning.error, report, wrote)  # fmt: skip
        return 1
    tuned = tuning.result()
    tuned.save_adapters(out, overwrite=True)  # refused above when it existed without --overwrite
    state_path.unlink(missing_ok=True)
    report = tuning.outcome
    if report.kept == "original":
        log.warning("%s; wrote them, unchanged, to %s", report, out)
    elif not report.checked:
        log.warning("%s; wrote them to %s", report, out)
    else:
        log.info("%s; wrote them to %s", report, out)
    return 0


def _train(tuning, state_path: Path, args) -> None:
    from tqdm.auto import tqdm

    from napari_sansa.core.training.api import step_postfix

    s = tuning.settings
    bar = tqdm(total=s.steps, initial=tuning.step, unit="step", desc="fine-tuning",
               disable=args.quiet, dynamic_ncols=True)  # fmt: skip
    snapshot = None
    try:
        for stats in tuning:
            snapshot = None
            bar.n = stats.step
            post = step_postfix(stats)
            bar.set_postfix(**post, refresh=True)
            if args.quiet and stats.val_loss is not None:
                log.info("step %d/%d %s", stats.step, s.steps, post)
            if stats.step and stats.step % args.save_every == 0 and stats.step < s.steps:
                _save_state(tuning.state_dict(), state_path)
            else:
                snapshot = copy.deepcopy(tuning.state_dict())
    except KeyboardInterrupt:
        if snapshot is not None:  # the last finished step, saved before leaving
            _save_state(snapshot, state_path)
        log.warning("interrupted: run the same command again to continue from %s", state_path)
        raise
    finally:
        bar.close()
