"""Spreading a run over a Dask cluster: each worker loads the model once, the references
are decoded once (on a worker) and shared, and targets go out in chunks."""

from __future__ import annotations

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.models.source import ModelSource
from napari_sansa.dataset import models
from napari_sansa.dataset.records import RunSettings
from napari_sansa.dataset.writing import process_targets


def _prepare_task(source: ModelSource, refs, input_size, intensity_range, threshold):
    model = models._cached_model(source)
    return model.prepare_references(
        refs, input_size=input_size, intensity_range=intensity_range, threshold=threshold
    )


def _chunk_task(source: ModelSource, memory, targets, out, run, strict, skip_existing):
    rows: list = []
    try:
        return process_targets(
            models._cached_model(source),
            memory,
            targets,
            out,
            run,
            strict,
            None,
            skip_existing,
            rows,
        )
    except InvalidInputError as exc:  # strict: the client lists the failure in scores.csv
        exc.failed_rows = [r for r in rows if r["status"] == "failed"]
        raise


def _chunks(targets, run: RunSettings, size: int):
    if run.mode == "sequential":
        # order matters within each folder sequence: keep images together, stacks alone
        images = [t for t in targets if t.kind != "stack"]  # "tiff": opened on the worker
        return ([images] if images else []) + [[t] for t in targets if t.kind == "stack"]
    out, cur = [], []
    for t in targets:
        if t.kind == "stack":
            out.append([t])
            continue
        cur.append(t)
        if len(cur) >= size:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _prepare_dask(client, source, refs, run: RunSettings):
    """The references' memory, prepared on a worker; its errors (model, references) raised."""
    from dask.distributed import wait

    memory = client.submit(
        _prepare_task, source, refs, run.input_size, run.intensity_range, run.threshold, pure=False
    )
    wait([memory])
    if memory.status == "error":
        memory.result()  # raises the worker's error
    return memory


def _run_dask(client, source, memory, todo, out, run, strict, chunk_size, bar, skip_existing, rows):
    from dask.distributed import as_completed

    futures = {}
    for chunk in _chunks(todo, run, chunk_size):
        f = client.submit(
            _chunk_task, source, memory, chunk, str(out), run, strict, skip_existing, pure=False
        )
        futures[f] = sum(t.frames for t in chunk)
    try:
        for f in as_completed(list(futures)):
            done = f.result()
            rows.extend(done)
            # a TIFF found to be a stack on the worker: one row per frame (bar in frames)
            if len(done) > futures[f]:
                bar.total += len(done) - futures[f]
            bar.update(len(done))
    except BaseException as exc:
        rows.extend(getattr(exc, "failed_rows", []))
        client.cancel(list(futures))
        raise
    return rows
