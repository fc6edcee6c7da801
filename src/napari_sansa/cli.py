"""The ``napari-sansa`` command line.

    napari-sansa gui [--sample] [FILE ...]     open napari with the SANSA widget
    napari-sansa models [--json]               list the registered models
    napari-sansa download NAME [NAME ...]      fetch weights ahead of time
    napari-sansa segment TARGET ... --reference IMAGE LABELS --out DIR [options]
    napari-sansa finetune --train IMAGE LABELS ... --out adapters.pth [options]

Exit codes: 0 success; 1 the run finished but some images failed (they are listed
in scores.csv; running again after fixing them does only those), or it stopped on an
unexpected error or because its Dask cluster had no worker left;
2 bad usage or input (the message says what to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from napari_sansa.core.errors import OptionError, SansaError
from napari_sansa.core.images import DEFAULT_INPUT_SIZE

log = logging.getLogger("napari_sansa")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-sansa",
        description="SANSA few-shot segmentation: annotate a few images, label the rest.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("gui", help="open napari with the SANSA widget")
    g.add_argument("files", nargs="*", help="images to open")
    g.add_argument("--sample", action="store_true", help="open the sample stack with annotations")

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    d = sub.add_parser("download", help="download models' weights into the cache")
    d.add_argument("names", nargs="+", metavar="NAME", help="registered model names")
    d.add_argument("--force", action="store_true", help="download again even if cached")

    from napari_sansa.core.threads import add_threads_option

    s = sub.add_parser(
        "segment",
        help="label whole folders of images or TIFF stacks",
        description="Label every target image from a few annotated references. Outputs mirror "
        "the inputs' folders as TIFF label images (class ids, same size as the image; a "
        "multi-page TIFF gives a label stack) and scores.csv lists every target.",
    )
    s.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="image files, folders, multi-page TIFFs, OME-Zarr folders (.zarr) or vendor "
        "files (.czi .nd2 .lif .dv, with napari-sansa[formats] and the bioio plugin)",
    )
    s.add_argument(
        "-r",
        "--reference",
        nargs=2,
        action="append",
        default=[],
        metavar=("IMAGE", "LABELS"),
        help="a reference image and its label image (nonzero value = class id); repeatable",
    )
    s.add_argument(
        "--prompts", metavar="JSON", help="references with points/boxes/scribbles (see docs/cli.md)"
    )
    s.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    s.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="registered model (default sansa-universal; see `napari-sansa models`)",
    )
    s.add_argument("--config", help="SAM2 config of local files, e.g. sam2_hiera_l")
    s.add_argument("--sam2-checkpoint", metavar="FILE", help="Meta's SAM2 weights file")
    s.add_argument("--adapter-checkpoint", metavar="FILE", help="SANSA adapter weights file")
    s.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    add_threads_option(s)
    s.add_argument("--mode", default=None, choices=("independent", "sequential"))
    s.add_argument(
        "--sequential-axis",
        default=None,
        choices=("T", "Z", "t", "z"),
        metavar="T|Z",
        help="with --mode sequential on T x Z stacks: the axis the sequence runs along, "
        "restarted at each index of the other (default: the last frame axis, Z)",
    )
    s.add_argument(
        "--axes",
        default=None,
        metavar="AXES",
        help="the axes of TIFFs that record none (or to override what a file records), one "
        "letter per axis, e.g. TCYX or TZCYX "
        "(T, Z frames; C channels; Y, X rows, columns; S colour samples)",
    )
    s.add_argument(
        "--channels",
        default=None,
        metavar="C[,C,C]",
        help="the channels of a channel axis (C) that make each frame: one as gray, or up "
        "to three as red, green, blue, e.g. 2,0,1 (default: the first, as gray)",
    )
    s.add_argument("--threshold", type=float, default=None, help="probability threshold (0.5)")
    s.add_argument(
        "--input-size",
        default=None,
        help=f"the authors' intermediate square resize ({DEFAULT_INPUT_SIZE}), or 'none'",
    )
    s.add_argument(
        "--intensity-range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="map LOW..HIGH to the model's range for every image (default: per-image rule)",
    )
    s.add_argument("--batch-size", type=int, default=None, help="targets per model batch")
    s.add_argument(
        "--tile-size",
        type=int,
        default=None,
        metavar="N",
        help="segment images larger than N x N pixels by tiles of N (default: untiled)",
    )
    s.add_argument(
        "--halo",
        type=int,
        default=None,
        metavar="N",
        help="pixels of context around each tile's kept part (default: tile size / 8)",
    )
    s.add_argument(
        "--instances",
        action="store_true",
        help="also split each class into objects: an object label image per target and "
        "objects.csv (one row per object)",
    )
    s.add_argument(
        "--min-size",
        type=int,
        default=None,
        metavar="N",
        help="with --instances: drop objects smaller than N pixels (10; 0 keeps all)",
    )
    s.add_argument(
        "--seed-distance",
        type=int,
        default=None,
        metavar="N",
        help="with --instances: the least distance between two objects' seeds (5 pixels; "
        "larger splits less)",
    )
    s.add_argument(
        "--split",
        default=None,
        choices=("distance", "probability", "none"),
        help="with --instances: how touching objects are separated (distance)",
    )
    s.add_argument(
        "--refine",
        action="store_true",
        default=None,
        help="with --instances: refine each object by a SAM2 decoder pass with its box as "
        "the prompt, on the features already computed (no second encoding; per plane)",
    )
    s.add_argument(
        "--objects-per-plane",
        dest="dims",
        action="store_const",
        const="2d",
        default=None,
        help="with --instances: split each plane of a z-stack on its own (as earlier versions did) "
        "instead of into 3D objects across the planes",
    )
    s.add_argument(
        "--voxel-size",
        dest="spacing",
        default=None,
        metavar="Z,Y,X",
        help="with --instances: the voxel size of z-stacks for 3D objects, e.g. 2,0.5,0.5 "
        "(default: from each TIFF's ImageJ or OME metadata, else cubic voxels)",
    )
    s.add_argument(
        "--tracks",
        action="store_true",
        help="link the objects of time-lapses (stacks with a T axis) into tracks: a track "
        "label stack per target, its Cell Tracking Challenge result folder and tracks.csv "
        "(implies --instances)",
    )
    s.add_argument(
        "--follow",
        action="store_true",
        help="with --tracks (implied): link the objects on where SAM2 carries each of them "
        "into the next frame (its memory attention, on the features the run computed, kept "
        "on disk in the output's scratch folder until the stack's tracks are written) "
        "rather than where they overlap; for cells that move more than their size; not "
        "with --tile-size",
    )
    s.add_argument(
        "--max-move",
        type=float,
        default=None,
        metavar="PIXELS",
        help="with --tracks: the farthest a cell moves between two frames (pixels; in the "
        "voxel size's units for T x Z stacks; default: 1.5 times the objects' median "
        "diameter); with --follow also how far an object's carried mask may reach",
    )
    s.add_argument(
        "--probabilities", action="store_true", help="also write per-class probability maps"
    )
    s.add_argument(
        "--format",
        default=None,
        choices=("tiff", "ome-zarr"),
        help="the outputs' format: TIFF (default) or one OME-Zarr store per output (NGFF 0.4, "
        "multiscale; see docs/large-images.md)",
    )
    s.add_argument(
        "--into-input-store",
        action="store_true",
        help="with --format ome-zarr and OME-Zarr targets: also add each target's labels to "
        "its own image store as labels/sansa (nothing there is changed)",
    )
    s.add_argument("--overwrite", action="store_true", help="redo targets that already have output")
    s.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    s.add_argument(
        "--allow-many-classes",
        action="store_true",
        help="accept a label image with more classes than a tenth of its pixels",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar, log lines only")
    s.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler to spread work over, tcp://HOST:PORT (see docs/cluster.md)",
    )
    s.add_argument(
        "--worker-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --scheduler: how long to wait when the cluster has no worker left before "
        "stopping (60; finished outputs are kept)",
    )
    s.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="targets per Dask task (default: up to 16, fewer so that every worker thread "
        "of the cluster gets some)",
        metavar="N",
    )
    from napari_sansa.dataset.finetune import add_parser as add_finetune_parser

    add_finetune_parser(sub)
    return p


def _print_models(as_json: bool) -> None:
    from napari_sansa.core.models.registry import list_models, napari_sansa_home

    models = list_models()
    if as_json:
        print(json.dumps(models, indent=2))
        return
    print(f"cache: {napari_sansa_home() / 'weights'}  (NAPARI_SANSA_HOME moves it)\n")
    print(f"{'name':24} {'config':14} {'size':>9}  {'on disk':7}  description")
    for m in models:
        size = f"{m['size_mb']:.0f} MB" if m["size_mb"] else "?"
        if m["size_mb"] and not m["size_known"]:
            size = "+" + size
        print(
            f"{m['name']:24} {m['config']:14} {size:>9}  {'yes' if m['downloaded'] else 'no':7}  "
            f"{m['description']}"
        )
    print("\n'+N MB': the adapter file's size is not known in advance.")
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(m["terms"], []).append(m["name"])
    print("\nterms of use, as far as known (docs/models.md, 'Terms of use'):")
    for terms, names in groups.items():
        print(f"- {', '.join(names)}:\n    {terms}")


def _download(names, force: bool) -> None:
    from napari_sansa.core.models.registry import get_model_spec, resolve_files

    specs = [get_model_spec(n) for n in names]  # check every name before fetching anything
    for spec in specs:
        sam2, adapters = resolve_files(spec, download=True, force=force)
        print(f"{spec.name}: {sam2}" + (f", {adapters}" if adapters else ""))


def _absolute(path):
    """``path`` with ``~`` expanded, made absolute (None stays None)."""
    if not path:
        return path
    from pathlib import Path

    return str(Path(path).expanduser().absolute())


def _segment_model(args):
    """The ``ModelSource`` of ``segment``'s model flags (checked together)."""
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.dataset import ModelSource

    files = (args.config, args.sam2_checkpoint, args.adapter_checkpoint)
    if args.model and any(files):
        raise InvalidInputError(
            "give --model NAME or --config/--sam2-checkpoint/--adapter-checkpoint, not both"
        )
    if args.adapter_checkpoint and not args.sam2_checkpoint:
        raise InvalidInputError("--adapter-checkpoint needs --sam2-checkpoint (Meta's SAM2 file)")
    if args.config and not args.sam2_checkpoint:
        raise InvalidInputError(
            "--config needs --sam2-checkpoint FILE (Meta's SAM2 weights of that config), or use "
            "--model NAME for a registered model (see `napari-sansa models`)"
        )
    common = {"device": args.device, "precision": args.precision, "image_size": args.image_size}
    common["threads"] = args.threads
    if args.sam2_checkpoint:
        # absolute paths: Dask workers run in another working directory
        return ModelSource(
            config=args.config,
            sam2_checkpoint=_absolute(args.sam2_checkpoint),
            adapter_checkpoint=_absolute(args.adapter_checkpoint),
            **common,
        )
    return ModelSource(name=args.model or "sansa-universal", **common)


#: ``segment``'s flags that split objects, each an ObjectOptions field of the same name
_OBJECT_FLAGS = ("min_size", "seed_distance", "split", "refine", "dims", "spacing")
_FLAG_NAMES = {"dims": "--objects-per-plane", "spacing": "--voxel-size"}


def _segment_options(args):
    """The run's options from the flags, checked before anything is read or loaded
    (a DatasetOptions: the flags are its fields' names)."""
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.core.images import input_size_from_text
    from napari_sansa.dataset import DatasetOptions

    given = {k: getattr(args, k) for k in ("mode", "threshold", "chunk_size", "format")}
    given = {k: v for k, v in given.items() if v is not None}  # the options' defaults else
    if args.input_size is not None:
        given["input_size"] = input_size_from_text(args.input_size)
    objects = {k: getattr(args, k) for k in _OBJECT_FLAGS if getattr(args, k) is not None}
    if objects and not (args.instances or args.tracks or args.follow):
        flags = ", ".join(_FLAG_NAMES.get(k) or _flag(k) for k in objects)
        raise InvalidInputError(f"{flags} split objects: give --instances with it")
    return DatasetOptions.make(
        intensity_range=args.intensity_range,
        batch_size=args.batch_size,
        tile_size=args.tile_size,
        halo=args.halo,
        instances=objects or True if args.instances or args.tracks or args.follow else None,
        tracks=args.tracks or args.follow,
        follow=args.follow,
        max_move=args.max_move,
        probabilities=args.probabilities,
        axes=args.axes,
        channels=args.channels,
        sequential_axis=args.sequential_axis,
        into_input_store=args.into_input_store,
        **given,
    )


def _segment_references(args, options, lazy: bool) -> list:
    """The references of ``--reference`` pairs and ``--prompts`` files."""
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.dataset import load_prompt_file, load_reference_pair

    many = {"allow_many_classes": args.allow_many_classes, "axes": options.axes}
    many["channels"], many["lazy"] = options.channels, lazy
    references = [load_reference_pair(img, lab, **many) for img, lab in args.reference]
    if args.prompts:
        references += load_prompt_file(args.prompts, **many)
    if not references:
        raise InvalidInputError(
            "no references: give --reference IMAGE LABELS (repeatable) or --prompts FILE.json"
        )
    return references


def _dask_options(args) -> dict:
    """``--scheduler`` and ``--worker-wait``, checked before anything is loaded."""
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.dataset.distributed import check_scheduler_address, check_worker_wait

    dask_options = {}
    if args.worker_wait is not None:
        if not args.scheduler:
            raise InvalidInputError("--worker-wait applies to Dask runs: give --scheduler with it")
        dask_options["worker_wait"] = check_worker_wait(args.worker_wait)
    if args.scheduler is not None:  # an empty address is refused, not a local run
        args.scheduler = check_scheduler_address(args.scheduler)
    return dask_options


def _client(address):
    """A ``dask.distributed.Client`` of the scheduler at ``address``."""
    from napari_sansa.core.errors import InvalidInputError

    try:
        from dask.distributed import Client
    except ImportError:
        raise InvalidInputError(
            "--scheduler needs dask.distributed: pip install 'napari-sansa[dask]'"
        ) from None
    try:
        return Client(address)  # dask's distributed.comm.timeouts.connect applies
    except OSError as exc:
        raise InvalidInputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    except ValueError as exc:  # an address of a form the check above lets through
        raise InvalidInputError(
            f"--scheduler {address!r} is not a Dask scheduler address ({exc}): give tcp://HOST:PORT"
        ) from None
    except TypeError as exc:  # a scheme whose transport is not installed (ucx://)
        raise InvalidInputError(
            f"--scheduler {address!r}: Dask cannot connect to it from here ({exc}); "
            "the transport of that scheme is missing (ucx:// needs the distributed-ucxx "
            "package) or not set up: give tcp://HOST:PORT, or see docs/cluster.md"
        ) from None


def _segment(args) -> int:
    from napari_sansa.dataset import segment_dataset

    options = _segment_options(args)
    dask_options = _dask_options(args)
    source = _segment_model(args)
    # tiled runs read large TIFF references by windows (not sent to Dask workers: read whole)
    lazy = options.segment.tiles is not None and not args.scheduler
    references = _segment_references(args, options, lazy)
    client = _client(args.scheduler) if args.scheduler else None
    try:
        report = segment_dataset(
            args.targets, references, args.out, options, model=source, client=client,
            overwrite=args.overwrite, strict=args.strict, progress=not args.quiet,
            **dask_options,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    return _log_report(report, options)


def _log_report(report, options) -> int:
    """Say what a ``segment`` run did; its exit code (1: some images failed)."""
    rate = report.frames / report.seconds if report.seconds else 0.0
    log.info(
        "labelled %d target(s), skipped %d already done, %d failed in %.1f s (%.2f images/s); "
        "scores: %s",
        report.done,
        report.skipped,
        len(report.failed),
        report.seconds,
        rate,
        report.csv,
    )
    if options.segment.instances is not None:
        log.info("objects: %s", report.objects_csv)
    if options.tracks and report.tracks_csv is not None:
        log.info("tracks: %s", report.tracks_csv)
    for source_path, message in report.failed:
        log.warning("failed: %s: %s", source_path, message)
    if report.failed:
        log.warning(
            "%d image(s) failed (listed in %s): fix or replace them and run the same command "
            "again; only they will be done",
            len(report.failed),
            report.csv,
        )
        return 1
    return 0


def _flag(option: str) -> str:
    """The command line's name of an option: ``tile_size`` -> ``--tile-size``."""
    return "--" + option.replace("_", "-")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit cannot fail on a closed pipe."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _gui(args) -> int:
    from napari_sansa.core.errors import InvalidInputError
    from napari_sansa.napari.app import display_problem, launch

    problem = display_problem()
    if problem:
        raise InvalidInputError(problem)
    launch(args.files, sample=args.sample)
    return 0


def _models(args) -> int:
    _print_models(args.json)
    return 0


def _download_command(args) -> int:
    _download(args.names, args.force)
    return 0


#: one function per subcommand: ``args -> exit code``
def _finetune(args) -> int:
    from napari_sansa.dataset.finetune import run

    return run(args)


COMMANDS = {
    "gui": _gui,
    "models": _models,
    "download": _download_command,
    "segment": _segment,
    "finetune": _finetune,
}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="napari-sansa: %(message)s", stream=sys.stderr, force=True
    )
    try:
        return COMMANDS[args.command](args)
    except SansaError as exc:
        text = exc.worded(_flag) if isinstance(exc, OptionError) else exc
        print(f"napari-sansa: error: {text}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 1: a run that stopped (no Dask worker left)
    except BrokenPipeError:  # the reader went away (`napari-sansa models | head`)
        _silence_stdout()
        return 0
    except OSError as exc:
        from napari_sansa.dataset import DiskFullError

        if isinstance(exc, DiskFullError):
            print(f"napari-sansa: error: {exc.strerror}", file=sys.stderr)
            return 1
        if exc.filename is None:
            raise
        # a file that cannot be read or written mid-run: what and why, without a traceback
        print(f"napari-sansa: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "napari-sansa: interrupted; finished outputs are kept, run again to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
