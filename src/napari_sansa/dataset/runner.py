"""``segment_dataset``: a whole dataset, headless, from a few references.

It is resumable (outputs already written are skipped), every output is written
atomically (temporary file, then rename), one unreadable image is reported and
listed in ``scores.csv`` rather than stopping the run (unless ``strict``), and
with a ``dask.distributed.Client`` the targets are spread over a cluster: each
worker loads the model once, the references are decoded once and shared. A run
reports each finished frame (``on_progress``) and stops cleanly when asked
(``cancel``); :func:`~napari_sansa.dataset.progress.segment_dataset_iter` is the
same run as a generator.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_range
from napari_sansa.core.models.source import ModelSource
from napari_sansa.core.prompts import Reference
from napari_sansa.dataset import models
from napari_sansa.dataset.discovery import Target, discover_targets
from napari_sansa.dataset.distributed import (
    WORKER_WAIT,
    check_worker_wait,
    prepare_dask,
    run_dask,
)
from napari_sansa.dataset.locking import OutputLock
from napari_sansa.dataset.manifest import (
    check_run_file,
    earlier_rows,
    final_rows,
    recorded_with,
    settings_signature,
    write_csv,
    write_run_file,
)
from napari_sansa.dataset.objects import (
    check_objects_csv,
    object_rows,
    prune_objects_csv,
    write_objects_csv,
)
from napari_sansa.dataset.records import existing_record, target_done
from napari_sansa.dataset.references import reference_files, references_digest
from napari_sansa.dataset.rows import score_row
from napari_sansa.dataset.run_progress import RunCancelled, RunProgress, unfinished
from napari_sansa.dataset.settings import RunSettings, reference_options
from napari_sansa.dataset.stacks import check_layout, reference_colour
from napari_sansa.dataset.writing import cleanup_partials, process_targets, targets_to_compute


@dataclass
class BatchReport:
    """What a run did. ``failed`` lists ``(source, message)``; ``blank`` lists the
    constant frames of stacks, labelled all 0, as ``(source, frame, message)``."""

    out: Path
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)
    blank: list = field(default_factory=list)  # (source, frame, message) of blank frames
    frames: int = 0
    seconds: float = 0.0
    csv: Path | None = None
    objects_csv: Path | None = None  # with instances
    cancelled: bool = False  # stopped by ``cancel`` before the end (a rerun resumes)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_count(value, name: str, flag: str, none_ok: bool) -> None:
    ok = value is None and none_ok
    ok = ok or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not ok:
        auto = " (or None: chosen automatically)" if none_ok else ""
        raise InvalidInputError(f"{name} ({flag}) must be a whole number >= 1{auto}, got {value!r}")


def _check_output_folder(out: Path) -> None:
    """Refuse an ``out`` that cannot be a folder, before anything is loaded or written."""
    if out.exists() and not out.is_dir():
        raise InvalidInputError(
            f"the output folder {out} is a file, not a folder: give --out a folder (it is "
            "created if it does not exist)"
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InvalidInputError(
                    f"the output folder {out} cannot be made: {parent} is a file, not a folder"
                )
            break


def _reference_outputs(items, out: Path, references) -> dict[str, Path]:
    """The targets whose output is one of the references' files, with that file: such a
    target is never labelled (a reference file is never an output, even with overwrite)."""
    files = reference_files(references)
    keys = {str(p.resolve()) for p in files}
    ids = {}
    for p in files:
        with contextlib.suppress(OSError):
            st = p.stat()
            ids[(st.st_dev, st.st_ino)] = p
    kept = {}
    for t in items:
        for o in (t.output, t.prob_output):
            path = out / o
            hit = path if str(path.resolve()) in keys else None
            with contextlib.suppress(OSError):
                st = path.stat()
                hit = hit or ids.get((st.st_dev, st.st_ino))
            if hit is not None:
                kept[t.output] = hit
    return kept


def segment_dataset(
    targets,
    references,
    out,
    *,
    model="sansa-universal",
    mode: str = "independent",
    threshold: float = 0.5,
    input_size: int | None = 640,
    intensity_range=None,
    probabilities: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int | None = None,
    client=None,
    chunk_size: int = 16,
    progress: bool = True,
    tile_size: int | None = None,
    halo: int | None = None,
    instances=False,
    axes: str | None = None,
    channels=None,
    sequential_axis: str | None = None,
    on_progress=None,
    cancel=None,
    worker_wait: float = WORKER_WAIT,
) -> BatchReport:
    """Label every target image (files, folders, TIFF stacks) into ``out``.

    ``references``: a list of :class:`~napari_sansa.Reference`. ``model``: a registry
    name, a :class:`ModelSource`, or (local runs only) a loaded model. ``client``: a
    ``dask.distributed.Client`` to spread the work over a cluster. Outputs mirror the
    inputs' folders as TIFF label images (stacks as label stacks); ``scores.csv``
    lists every target with its per-class scores and areas, or why it failed.
    ``tile_size``/``halo``: references and targets larger than a tile are segmented
    by tiles (see :meth:`~napari_sansa.SansaModel.segment_iter`). ``instances``: True,
    a dict of :class:`~napari_sansa.ObjectOptions`' fields, or one: each target also gets
    an object label image (``<name>_objects.tif``, ids unique within an image or a stack)
    and ``objects.csv`` lists every object (its class, area, centroid, box, probability).
    ``axes``: the axes of TIFF targets that record none, e.g. "TCYX" (see
    :class:`~napari_sansa.dataset.tiffstack.TiffStack`); ``channels``: the channels of a channel
    axis that make a frame (one as gray, two or three as red, green, blue; default the
    first); ``sequential_axis``: "T" or "Z", the axis a sequential run goes along
    (restarted at each index of the others; default the last frame axis). Label stacks
    keep their input's frame axes (TZYX for a TZCYX input), recorded in their metadata.
    ``on_progress``: called with a :class:`~napari_sansa.dataset.progress.DatasetProgress`
    for each finished frame (from the run's threads). ``cancel``: a ``threading.Event``
    or a callable returning True to stop: the run ends after the frame in progress (a
    stack not finished is left unwritten), ``scores.csv`` lists what was done, the report
    says ``cancelled`` and the same call later resumes. ``worker_wait``: with a ``client``,
    the seconds the run waits when the cluster has no worker left (all died or were
    stopped) before it stops with :class:`~napari_sansa.dataset.distributed.WorkersLostError`
    (finished outputs are kept and listed in ``scores.csv``; a rerun does the rest).

    Every setting and the output folder are checked before anything is loaded or
    written; the run holds the folder's lock (:class:`OutputLockedError` if another run
    writes there). A target whose output is a reference's file (loaded with
    :func:`load_reference_pair` or :func:`load_prompt_file`) is never labelled.
    """
    from napari_sansa.core.fusion import check_threshold
    from napari_sansa.core.model import MODES
    from napari_sansa.core.objects import ObjectOptions
    from napari_sansa.core.options import check_cancel
    from napari_sansa.core.preprocess import check_input_size
    from napari_sansa.core.tiling import TileSpec

    t0 = time.perf_counter()
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    threshold = check_threshold(threshold)
    input_size = check_input_size(input_size)
    tiles = TileSpec.make(tile_size, halo)
    objects = ObjectOptions.make(instances)
    axes, channels, sequential_axis = check_layout(axes, channels, mode, sequential_axis)
    if tiles is not None and mode != "independent":
        raise InvalidInputError("--tile-size works with --mode independent only")
    _check_count(batch_size, "the batch size", "--batch-size", none_ok=True)
    _check_count(chunk_size, "the chunk size", "--chunk-size", none_ok=False)
    if isinstance(references, Reference):
        references = [references]
    references = list(references or [])
    if not references:
        raise InvalidInputError(
            "no references: give --reference IMAGE LABELS (or a --prompts JSON file)"
        )
    if intensity_range is not None:
        check_range(intensity_range)
    if on_progress is not None and not callable(on_progress):
        raise InvalidInputError(f"on_progress must be a callable, got {on_progress!r}")
    cancelled = None if cancel is None else check_cancel(cancel)
    worker_wait = check_worker_wait(worker_wait)
    loaded, source, ident, earlier_ident = models.run_model(model, client)
    out = Path(out).expanduser().resolve()
    _check_output_folder(out)
    unreadable: list = []
    items = discover_targets(targets, out, probabilities, unreadable=unreadable)
    settings = {
        "model": ident,
        "references": references_digest(references),
        "mode": mode,
        "threshold": threshold,
        "input_size": input_size,
        "intensity_range": list(intensity_range) if intensity_range is not None else None,
    }
    if tiles is not None:  # only then: untiled runs keep the signature they always had
        settings["tiles"] = [tiles.tile_size, tiles.halo]
    if objects is not None:  # the same: runs without objects keep their signature
        settings["instances"] = asdict(objects)
        if not objects.refine:  # and runs with unrefined objects theirs
            del settings["instances"]["refine"]
    layout = {"axes": axes, "channels": channels, "sequential_axis": sequential_axis}
    settings.update({k: v for k, v in layout.items() if v is not None})  # the same
    signature = settings_signature(settings)
    run = RunSettings(
        mode,
        threshold,
        input_size,
        tuple(intensity_range) if intensity_range is not None else None,
        probabilities,
        batch_size,
        signature,
        tiles.tile_size if tiles is not None else None,
        tiles.halo if tiles is not None else None,
        objects,
        axes,
        channels,
        sequential_axis,
        reference_colour(references),
        cancel=cancelled,
    )
    job = _Job(
        items, unreadable, references, out, out.is_dir(), run, settings, overwrite, strict,
        loaded, source, client, chunk_size, progress, on_progress, worker_wait=worker_wait,
    )  # fmt: skip
    if earlier_ident is not None:
        job.earlier_settings = {**settings, "model": earlier_ident}
    with OutputLock(out):
        report = _locked_run(job)
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class _Job:
    """Everything a run needs once its settings are checked (see :func:`_locked_run`)."""

    items: list
    unreadable: list
    references: list
    out: Path
    existed: bool  # the output folder was there before the run (which made its lock)
    run: RunSettings
    settings: dict
    overwrite: bool
    strict: bool
    loaded: object  # a SansaModel, or None: loaded from ``source`` when needed
    source: ModelSource | None
    client: object
    chunk_size: int
    progress: bool
    on_progress: object = None  # called with each DatasetProgress
    worker_wait: float = WORKER_WAIT  # seconds without a Dask worker before the run stops
    #: the same settings as a folder may have recorded them before (a loaded model's
    #: identity string, before it recorded its files' identity): such a folder resumes
    earlier_settings: dict | None = None


def _locked_run(job: _Job) -> BatchReport:
    """The run itself, while it holds the output folder's lock."""
    items, out, run, overwrite, strict = job.items, job.out, job.run, job.overwrite, job.strict
    loaded, source, client, references = job.loaded, job.source, job.client, job.references
    settings = job.settings
    earlier_form = job.earlier_settings
    if earlier_form is not None and not overwrite and recorded_with(out, earlier_form):
        settings = earlier_form  # the folder goes on in the form it recorded
        run = replace(run, signature=settings_signature(settings))
    earlier = earlier_rows(out)  # a scores.csv that is not ours is refused, never replaced
    if run.objects is not None:
        check_objects_csv(out)  # and so is an objects.csv
    kept = _reference_outputs(items, out, references)
    check_run_file(out, run.signature, settings, items, overwrite, kept)
    rows: list = [score_row(Target(p, ""), "failed", message) for p, message in job.unreadable]
    for t in items:
        if t.output in kept:
            rows.append(
                score_row(
                    t,
                    "reference",
                    (
                        f"not labelled: {out / t.output} is the reference file {kept[t.output]}, "
                        "which is never replaced"
                    ),
                )
            )
    items = [t for t in items if t.output not in kept]
    # what is finished, checked before anything is loaded or written: a rerun with
    # nothing left to do loads no model, and outputs of other images are never touched
    done = set() if overwrite else {t.output for t in items if target_done(t, out, run)}
    work = targets_to_compute(items, done, run)
    if run.objects is not None and not overwrite:
        for t in work:  # a file of that name that is not ours: refused, never replaced
            existing_record(t, out / t.objects_output)
    report = BatchReport(out, skipped=len(done))
    stop = run.cancel or (lambda: False)
    if stop():
        report.cancelled = True
        return report
    memory = None
    if work:
        # everything that can fail on bad settings (the model, the references) fails
        # before the run's manifest is written: a corrected command is not refused then
        if client is None:
            if loaded is None:
                loaded = models.cached_model(source)
            memory = loaded.prepare_references(references, **reference_options(run))
        else:
            memory = prepare_dask(client, source, references, run, job.worker_wait)
        write_run_file(out, run.signature, settings)
        cleanup_partials(out)
    elif not job.existed and not rows:  # nothing to label at all
        return report
    from tqdm.auto import tqdm

    total = sum(t.frames for t in items)
    initial = total - sum(t.frames for t in work)
    bar = tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc="napari-sansa",
        disable=not job.progress,
        dynamic_ncols=True,
    )
    progress = RunProgress(bar, rows, out, job.on_progress, stop, initial, total)

    def stack_found(t):
        progress.total += t.frames - 1

    error = None
    try:
        progress.check()  # Stop while the model was loading
        if work and client is None:
            process_targets(
                loaded,
                memory,
                work,
                out,
                run,
                strict,
                on_frame=progress.frame_done,
                skip_existing=not overwrite,
                rows=rows,
                on_stack=stack_found,
            )
        elif work:
            run_dask(
                client,
                source,
                memory,
                work,
                out,
                replace(run, cancel=None),  # the workers stop when their futures are
                strict,
                job.chunk_size,
                progress,
                not overwrite,
                rows,
                job.worker_wait,
            )
        report.cancelled = stop() and unfinished(work, rows)
    except RunCancelled:
        report.cancelled = True
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        failed = [r for r in rows if r["status"] == "failed"]
        report.failed = [(r["target"], r["message"]) for r in failed]
        report.done = len({r["target"] for r in rows if r["status"] in ("ok", "blank")})
        report.frames = sum(r["status"] in ("ok", "blank", "failed") for r in rows)
        report.blank = [
            (r["target"], r["frame"], r["message"]) for r in rows if r["status"] == "blank"
        ]
        try:
            final = final_rows(out, run.signature, items, rows, earlier, skip=frozenset(kept))
            report.csv = write_csv(out, final)
            if run.objects is not None:
                found = object_rows(out, run.signature, rows, skip=frozenset(kept))
                report.objects_csv = write_objects_csv(out, found)
            else:  # the rows of object images this run removed go too
                prune_objects_csv(out)
        except OSError:
            if error is None:
                raise
            # the run already stops on an error (a full disk, ...): report that one
        progress.flush()
    return report


def report_dict(report: BatchReport) -> dict:
    d = asdict(report)
    d["out"] = str(report.out)
    d["csv"] = str(report.csv) if report.csv else None
    d["objects_csv"] = str(report.objects_csv) if report.objects_csv else None
    return d
