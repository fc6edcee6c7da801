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

from napari_sansa.core.errors import InvalidInputError, output_error
from napari_sansa.core.models.source import ModelSource
from napari_sansa.core.options import SegmentOptions
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
    resolve_dims,
    write_objects_csv,
)
from napari_sansa.dataset.records import existing_record, target_done
from napari_sansa.dataset.references import reference_files, references_digest
from napari_sansa.dataset.rows import score_row
from napari_sansa.dataset.run_progress import RunCancelled, RunProgress, unfinished
from napari_sansa.dataset.settings import DatasetOptions, RunSettings
from napari_sansa.dataset.stacks import reference_colour
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
    tracks_csv: Path | None = None  # with tracks
    cancelled: bool = False  # stopped by ``cancel`` before the end (a rerun resumes)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_output_folder(out: Path) -> None:
    """Refuse an ``out`` that cannot be a folder, before anything is loaded or written."""
    if out.exists() and not out.is_dir():
        raise output_error(
            f"the output folder {out} is a file, not a folder: give a folder as {{out}} (it "
            "is created if it does not exist)",
            out,
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
    options: DatasetOptions | SegmentOptions | None = None,
    *,
    model="sansa-universal",
    overwrite: bool = False,
    strict: bool = False,
    client=None,
    progress: bool = True,
    on_progress=None,
    cancel=None,
    worker_wait: float = WORKER_WAIT,
    **keywords,
) -> BatchReport:
    """Label every target image (files, folders, TIFF stacks) into ``out``.

    ``references``: a list of :class:`~napari_sansa.Reference`. ``options``: a
    :class:`~napari_sansa.DatasetOptions` (or a :class:`~napari_sansa.SegmentOptions`);
    ``keywords``: fields of either (see those classes for each, and its default),
    replacing those of ``options``, e.g.
    ``segment_dataset(files, refs, "out", mode="sequential", probabilities=True)``.
    ``model``: a registry
    name, a :class:`ModelSource`, or (local runs only) a loaded model. ``client``: a
    ``dask.distributed.Client`` to spread the work over a cluster. Outputs mirror the
    inputs' folders as TIFF label images (stacks as label stacks, keeping their input's
    frame axes, e.g. TZYX for a TZCYX input, recorded in their metadata); ``scores.csv``
    lists every target with its per-class scores and areas, or why it failed. With
    ``instances`` each target also gets an object label image (``<name>_objects.tif``, ids
    unique within an image or a stack) and ``objects.csv`` lists every object (its class,
    area, centroid, box, probability); a stack with a Z axis gets 3D objects per time
    point unless ``instances={"dims": "2d"}`` (folders labelled per plane before stay
    per plane: ``dataset.objects.resolve_dims``), with ``instances={"spacing": (z, y,
    x)}`` or each TIFF's voxel size. With ``tracks`` (implies ``instances``) the objects
    of every time-lapse (a stack with a T axis) are linked into tracks: a track stack
    (``<name>_tracks.tif``), a Cell Tracking Challenge folder (``<name>_ctc/``) and
    ``tracks.csv`` (see :mod:`~napari_sansa.dataset.tracks`); a target without a T axis is
    refused before anything is loaded.
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
    from napari_sansa.core.options import check_cancel

    t0 = time.perf_counter()
    options = DatasetOptions.make(options, **keywords)
    if isinstance(references, Reference):
        references = [references]
    references = list(references or [])
    if not references:
        raise InvalidInputError(
            "no references: give --reference IMAGE LABELS (or a --prompts JSON file)"
        )
    if on_progress is not None and not callable(on_progress):
        raise InvalidInputError(f"on_progress must be a callable, got {on_progress!r}")
    cancelled = None if cancel is None else check_cancel(cancel)
    worker_wait = check_worker_wait(worker_wait)
    loaded, source, ident, earlier_ident = models.run_model(model, client)
    out = Path(out).expanduser().resolve()
    _check_output_folder(out)
    options = resolve_dims(options, out, overwrite)  # 3D objects, or per plane as before
    unreadable: list = []
    items = discover_targets(targets, out, options.probabilities, unreadable=unreadable)
    settings = {"model": ident, "references": references_digest(references), **options.record()}
    colour = reference_colour(references)
    run = RunSettings(options, settings_signature(settings), colour, cancel=cancelled)
    job = _Job(
        items, unreadable, references, out, out.is_dir(), run, settings, overwrite, strict,
        loaded, source, client, progress, on_progress, worker_wait=worker_wait,
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
    progress: bool
    on_progress: object = None  # called with each DatasetProgress
    worker_wait: float = WORKER_WAIT  # seconds without a Dask worker before the run stops
    #: the same settings as a folder may have recorded them before (a loaded model's
    #: identity string, before it recorded its files' identity): such a folder resumes
    earlier_settings: dict | None = None


def _locked_run(job: _Job) -> BatchReport:
    """The run itself, while it holds the output folder's lock."""
    out, overwrite = job.out, job.overwrite
    earlier_form = job.earlier_settings
    if earlier_form is not None and not overwrite and recorded_with(out, earlier_form):
        job.settings = earlier_form  # the folder goes on in the form it recorded
        job.run = replace(job.run, signature=settings_signature(earlier_form))
    run = job.run
    earlier = earlier_rows(out)  # a scores.csv that is not ours is refused, never replaced
    if run.instances is not None:
        check_objects_csv(out)  # and so is an objects.csv
    if run.tracks:
        from napari_sansa.dataset.tracks import check_tracks_csv

        check_tracks_csv(out)  # and a tracks.csv
    kept = _reference_outputs(job.items, out, job.references)
    check_run_file(out, run.signature, job.settings, job.items, overwrite, kept)
    rows: list = [score_row(Target(p, ""), "failed", message) for p, message in job.unreadable]
    rows += [_kept_row(t, out, kept[t.output]) for t in job.items if t.output in kept]
    items = [t for t in job.items if t.output not in kept]
    # what is finished, checked before anything is loaded or written: a rerun with
    # nothing left to do loads no model, and outputs of other images are never touched
    done = set() if overwrite else {t.output for t in items if target_done(t, out, run)}
    work = targets_to_compute(items, done, run)
    if run.instances is not None and not overwrite:
        for t in work:  # a file of that name that is not ours: refused, never replaced
            existing_record(t, out / t.objects_output)
            if run.tracks:
                from napari_sansa.dataset.ctc import check_ctc_folder

                existing_record(t, out / t.tracks_output)
                check_ctc_folder(out / t.ctc_output, t.source)
    if run.tracks:  # a target without a T axis: refused before anything is loaded
        from napari_sansa.dataset.tracks import check_time_axes

        check_time_axes(work, run)
    report = BatchReport(out, skipped=len(done))
    stop = run.cancel or (lambda: False)
    if stop():
        report.cancelled = True
        return report
    memory = None
    if work:
        memory = _prepare(job)
    elif not job.existed and not rows:  # nothing to label at all
        return report
    from tqdm.auto import tqdm

    total = sum(t.frames for t in items)
    initial = total - sum(t.frames for t in work)
    bar = tqdm(total=total, initial=initial, unit="img", desc="napari-sansa",
               disable=not job.progress, dynamic_ncols=True)  # fmt: skip
    progress = RunProgress(bar, rows, out, job.on_progress, stop, initial, total)
    error = None
    try:
        progress.check()  # Stop while the model was loading
        if work:
            _compute(job, memory, work, progress)
        report.cancelled = stop() and unfinished(work, rows)
    except RunCancelled:
        report.cancelled = True
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        _finish(report, job, items, rows, earlier, kept, error)
        progress.flush()
    return report


def _kept_row(t: Target, out: Path, reference: Path) -> dict:
    """The row of a target whose output would be the reference file ``reference``."""
    message = (
        f"not labelled: {out / t.output} is the reference file {reference}, which is never replaced"
    )
    return score_row(t, "reference", message)


def _prepare(job: _Job):
    """The references' memory, and the run's record written. Everything that can fail on
    bad settings (the model, the references) fails before the run's manifest is written:
    a corrected command is not refused then."""
    if job.client is None:
        if job.loaded is None:
            job.loaded = models.cached_model(job.source)
        memory = job.loaded.prepare_references(job.references, job.run.segment)
    else:
        memory = prepare_dask(job.client, job.source, job.references, job.run, job.worker_wait)
    write_run_file(job.out, job.run.signature, job.settings)
    cleanup_partials(job.out)
    return memory


def _compute(job: _Job, memory, work, progress: RunProgress) -> None:
    """Label ``work`` (here, or on the Dask cluster), reporting each frame to ``progress``."""
    if job.client is None:

        def stack_found(t):
            progress.total += t.frames - 1

        process_targets(
            job.loaded, memory, work, job.out, job.run, job.strict,
            on_frame=progress.frame_done, skip_existing=not job.overwrite, rows=progress.rows,
            on_stack=stack_found,
        )  # fmt: skip
    else:
        run = replace(job.run, cancel=None)  # the workers stop when their futures are
        run_dask(
            job.client, job.source, memory, work, job.out, run, job.strict,
            run.options.chunk_size, progress, not job.overwrite, progress.rows, job.worker_wait,
        )  # fmt: skip


def _finish(report: BatchReport, job: _Job, items, rows, earlier, kept, error) -> None:
    """The report's figures from ``rows``, and ``scores.csv`` (and ``objects.csv``)
    written; a write that fails after the run's own ``error`` does not hide it."""
    out, run = job.out, job.run
    failed = [r for r in rows if r["status"] == "failed"]
    report.failed = [(r["target"], r["message"]) for r in failed]
    report.done = len({r["target"] for r in rows if r["status"] in ("ok", "blank")})
    report.frames = sum(r["status"] in ("ok", "blank", "failed") for r in rows)
    report.blank = [(r["target"], r["frame"], r["message"]) for r in rows if r["status"] == "blank"]
    try:
        final = final_rows(out, run.signature, items, rows, earlier, skip=frozenset(kept))
        report.csv = write_csv(out, final)
        if run.instances is not None:
            found = object_rows(out, run.signature, rows, skip=frozenset(kept))
            report.objects_csv = write_objects_csv(out, found)
        else:  # the rows of object images this run removed go too
            prune_objects_csv(out)
        from napari_sansa.dataset.tracks import prune_tracks_csv, track_rows, write_tracks_csv

        if run.tracks:
            found = track_rows(out, run.signature, rows, skip=frozenset(kept))
            report.tracks_csv = write_tracks_csv(out, found)
        else:
            prune_tracks_csv(out)
    except OSError:
        if error is None:
            raise
        # the run already stops on an error (a full disk, ...): report that one


def report_dict(report: BatchReport) -> dict:
    d = asdict(report)
    d["out"] = str(report.out)
    d["csv"] = str(report.csv) if report.csv else None
    d["objects_csv"] = str(report.objects_csv) if report.objects_csv else None
    d["tracks_csv"] = str(report.tracks_csv) if report.tracks_csv else None
    return d
