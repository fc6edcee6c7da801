"""A TIFF stack in, one label stack out, read and written one frame at a time.

The label stack keeps the input's frame axes (a TZCYX input gives a TZYX label stack,
its probabilities TZCYX with one channel per class, its objects TZYX), recorded in
the output's metadata (:class:`~napari_sansa.dataset.outputs.Layout`) so that readers
(tifffile, napari) read them back. In sequential mode the frames run along one frame
axis (``RunSettings.sequential_axis``; by default the last, e.g. Z within each time
point), restarted from the references at each index of the other frame axes: a
sequence never crosses from one time point (or depth) to the next.

Objects (``instances``) of a stack with a Z axis are 3D by default
(``ObjectOptions.dims``): the label planes of each time point (each index of the frame
axes other than Z) are split together into 3D objects with the stack's voxel size
(given, or from its metadata: :mod:`~napari_sansa.dataset.voxels`), ids unique within
the whole stack (time point ``t``'s follow those of ``t - 1``), written as the same
TZYX object stack as objects per plane.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import replace

import numpy as np

from napari_sansa.core.channels import describe_channels
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import check_image
from napari_sansa.core.sequences import sequential_groups
from napari_sansa.dataset.discovery import Target
from napari_sansa.dataset.io import TiffStack, open_stack
from napari_sansa.dataset.outputs import Layout, write_failed, write_output
from napari_sansa.dataset.records import (
    check_output_paths,
    output_record,
    remove_stale_outputs,
    source_state,
)
from napari_sansa.dataset.rows import CSV_NAME, frame_at, score_row
from napari_sansa.dataset.settings import predictions

log = logging.getLogger(__name__)


def reference_colour(references) -> bool | None:
    """Whether the references' images are all colour (True) or all gray (False); None
    when they mix both (said in the log: gray images are taken as gray RGB)."""
    kinds = [np.ndim(r.image) == 3 for r in references]
    if len(set(kinds)) == 1:
        return kinds[0]
    if kinds:
        log.warning(
            "the references mix colour (RGB) and gray images (%d of %d are colour): gray "
            "images are taken as gray RGB; references of one kind match their targets better",
            sum(kinds),
            len(kinds),
        )
    return None


def _check_channel_kind(stack: TiffStack, run) -> None:
    """Refuse a stack whose channels make frames of another kind (gray, colour) than
    the references' (what channels the references need is said)."""
    if stack.channels is None or run.reference_colour is None:
        return
    colour = len(stack.channels) > 1
    if colour == run.reference_colour:
        return
    made = describe_channels(stack.channels)
    if run.reference_colour:
        fix = "choose two or three channels as red, green, blue with --channels (e.g. 0,1,2)"
    else:
        fix = "choose one channel, as gray, with --channels (e.g. 0)"
    raise InvalidInputError(
        f"{stack.path}: its frames are made of {made} ({'colour' if colour else 'gray'}), but "
        f"the references are {'colour (RGB)' if run.reference_colour else 'gray'} images: "
        f"{fix}, or give references of its kind"
    )


def frame_groups(stack: TiffStack, run) -> list[list[int]]:
    """The frames of ``stack`` as the runs of the model see them, in order: one group of
    every frame (independent mode), or in sequential mode one group per index of the
    frame axes other than the sequential one, its frames along that axis."""
    n = len(stack)
    if run.mode != "sequential" or len(stack.frame_axes) <= 1:
        return [list(range(n))]
    along = run.sequential_axis or stack.frame_axes[-1]
    if along not in stack.frame_axes:
        raise InvalidInputError(
            f"{stack.path} has no {along} axis to run along (its frame axes are "
            f"{stack.frame_axes}, axes {stack.axes}): choose --sequential-axis among "
            f"{', '.join(stack.frame_axes)}, or give its axes with --axes"
        )
    return sequential_groups(stack.frame_sizes, stack.frame_axes.index(along))


def _ordered(groups, predictions_of):
    """``(frame, prediction or None)`` for every frame of ``groups``, in their order;
    ``predictions_of(group, fed)`` gives the predictions of the frames it appends to
    ``fed`` (the others are blank: None)."""
    for group in groups:
        fed: list[int] = []
        p = 0
        for k, pred in enumerate(predictions_of(group, fed)):
            while group[p] != fed[k]:
                yield group[p], None
                p += 1
            yield group[p], pred
            p += 1
        for i in group[p:]:
            yield i, None


class _Scratch:
    """Memory-mapped scratch arrays of one stack in ``out/.napari-sansa/<hash>/``:
    what is computed frame by frame but written only once the stack is done."""

    def __init__(self, out, t: Target):
        self.folder = out / ".napari-sansa" / hashlib.sha1(t.output.encode()).hexdigest()
        self.arrays: list = []

    def array(self, name: str, dtype, shape):
        self.folder.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(
            self.folder / name, mode="w+", dtype=dtype, shape=tuple(shape)
        )
        self.arrays.append(arr)
        return arr

    def features(self):
        """A feature cache on disk in the scratch folder, for ``--follow``: the features
        the stack's run computes, read back when its objects are carried (see
        :meth:`_StackLabels.write`); removed with the folder. It keeps at most half the
        disk space free when the stack begins (the least recently used entries go first;
        the frames they held are encoded again when their objects are carried), so that
        a long stack leaves room for the outputs."""
        from napari_sansa.core.cache import DiskFeatureCache, FeatureCache

        self.folder.mkdir(parents=True, exist_ok=True)
        limit = free_disk_bytes(self.folder) // 2
        return FeatureCache(0, DiskFeatureCache(self.folder / "features", max_bytes=limit))

    def remove(self) -> None:
        self.arrays.clear()  # release the memory maps before removing their files
        if self.folder.is_dir() and not self.folder.is_symlink():  # a link: never followed
            for f in self.folder.iterdir():
                if f.is_dir() and not f.is_symlink():  # the features of --follow
                    shutil.rmtree(f)
                else:
                    f.unlink(missing_ok=True)
            self.folder.rmdir()


def free_disk_bytes(folder) -> int:
    """The bytes free to this user on the file system of ``folder``."""
    return int(shutil.disk_usage(folder).free)


def process_stack(model, memory, t: Target, out, run, strict, rows, on_frame):
    """A TIFF stack in, one label stack out.

    Frames are read one at a time and the label stack is written as they are
    computed (when they are computed in file order); with probabilities, objects, or a
    sequential run along another axis than the last, they go to memory-mapped scratch
    files first so that the label stack (the marker of a finished target) is written
    last. A constant (blank) frame is not given to the model: its labels are all 0
    and its row in ``scores.csv`` says so (with ``strict``, it stops the run).
    """
    state = source_state(t.source)
    try:
        check_output_paths(t, out, run)  # a folder in the way: this target fails
        remove_stale_outputs(t, out, run)
        stack = open_stack(t.source, run.axes, run.channels)
    except InvalidInputError as exc:
        _failed(t, exc, rows, strict, on_frame, t.frames)
        return
    try:
        _check_channel_kind(stack, run)
        if run.tracks and "T" not in stack.frame_axes:
            raise InvalidInputError(
                f"{t.source} has no T axis (axes {stack.axes}): there is nothing to track "
                "through time"
            )
        groups = frame_groups(stack, run)
    except InvalidInputError as exc:
        stack.close()
        _failed(t, exc, rows, strict, on_frame, len(stack))
        return
    job = _StackLabels(model, memory, t, stack, groups, run, strict, on_frame, state)
    scratch = _Scratch(out, t)
    try:
        try:
            job.write(out, scratch)
        except OSError as exc:
            write_failed(exc, out / t.output)
    except InvalidInputError as exc:
        _failed(t, exc, rows, strict, on_frame, job.n - job.done)
        return
    finally:
        stack.close()
        job.release()
        scratch.remove()
    job.log_blank()
    rows.extend(job.rows())


class _StackLabels:
    """The labelling of one stack: its frames through the model in the order of
    ``groups`` (:func:`frame_groups`), its outputs, and what they record of each frame
    (scores, areas, why a frame is blank)."""

    def __init__(
        self, model, memory, t: Target, stack: TiffStack, groups, run, strict, on_frame, state
    ):
        from napari_sansa.core.fusion import label_dtype

        self.model, self.memory, self.t, self.stack, self.groups = model, memory, t, stack, groups
        self.run, self.strict, self.on_frame, self.state = run, strict, on_frame, state
        self.hw = tuple(stack.frame_shape[:2])
        self.n = n = len(stack)
        self.classes = classes = list(memory.classes)
        self.dtype = label_dtype(max(classes))
        self.shape = (*stack.frame_sizes, *self.hw)
        self.frames = {"axes": stack.frame_axes, "sizes": list(stack.frame_sizes)}
        self.channels = None if stack.channels is None else list(stack.channels)
        if stack.channels is not None and run.channels is None:
            names = getattr(stack, "channel_names", None)  # OME-Zarr, vendor files
            log.info(
                "%s: %d channels on its C axis%s; %s (choose others with --channels)",
                t.source,
                stack.n_channels,
                f" ({', '.join(names)})" if names else "",
                describe_channels(stack.channels),
            )
        self.scores: list = [{}] * n
        self.areas: list = [dict.fromkeys(classes, 0)] * n
        self.blank: dict[int, str] = {}  # frame -> why it was labelled 0
        self.done = 0  # frames computed
        self.probs = self.labels = self.objects = None  # scratch arrays, when needed
        self.model_run = None  # the run the model sees, when not ``run`` (3D objects)

    def _images(self, group, fed):
        """The frames of ``group`` for the model, appended to ``fed``; blank ones are
        skipped (and noted), or stop the run with ``strict``."""
        t = self.t
        for i in group:
            img = self.stack[i]
            try:
                check_image(img, f"frame {i} of {t.source}")
            except InvalidInputError as exc:
                message = _blank_frame(img, i)
                if message is None:  # "the frame 3 of ..." -> "frame 3 of ..."
                    raise InvalidInputError(re.sub(r"^the frame ", "frame ", str(exc))) from None
                if self.strict:
                    raise InvalidInputError(f"{message} in {t.source}") from None
                self.blank[i] = message
                continue
            fed.append(i)
            yield img

    def _predictions_of(self, group, fed):
        run = self.run if self.model_run is None else self.model_run
        return predictions(self.model, self.memory, self._images(group, fed), run)

    def computed(self):
        """``(frame, labels)`` of every frame, in the order of the groups; its scores,
        areas, probabilities and objects are kept."""
        classes = self.classes
        for i, pred in _ordered(self.groups, self._predictions_of):
            if pred is None:
                lab = np.zeros(self.hw, self.dtype)
                if self.probs is not None:
                    self.probs[i] = 0
                if self.objects is not None:
                    self.objects.take(i, None, lab)
            else:
                lab = pred.labels
                self.scores[i] = {c: pred.scores[c] for c in classes}
                self.areas[i] = {c: int((lab == c).sum()) for c in classes}
                if self.probs is not None:
                    self.probs[i] = np.stack([pred.probabilities[c] for c in classes])
                if self.objects is not None:
                    self.objects.take(i, pred, lab)
            self.done += 1
            self.on_frame(self.t, 1)
            yield i, lab

    def record(self, role: str = "labels", objects=None) -> dict:
        """The record of one of the stack's outputs (see ``records.output_record``)."""
        return output_record(
            self.t,
            self.run,
            self.classes,
            self.scores,
            self.areas,
            self.blank,
            state=self.state,
            role=role,
            frames=self.frames,
            channels=self.channels,
            objects=objects,
        )

    def write(self, out, scratch: _Scratch) -> None:
        """Label the frames and write the stack's outputs, the label stack last but for
        the objects (see :meth:`_StackObjects.write`)."""
        t, run, n, hw, stack = self.t, self.run, self.n, self.hw, self.stack
        in_order = [i for g in self.groups for i in g] == list(range(n))
        volumes = z_volumes(stack) if run.instances is not None else None
        if run.instances is not None and run.instances.in_3d and volumes is not None:
            self.objects = _StackObjects3D(scratch, n, hw, volumes, self.dtype, self.classes)
            self.objects.voxels = _voxel_size(t, stack, run.instances.spacing)
            # the planes' own objects are not needed: the model's run makes none
            self.model_run = replace(run, options=replace(run.options, segment=_plain(run)))
        elif run.instances is not None:
            self.objects = _StackObjects(scratch, n, hw)
        final = out / t.output
        layout = Layout(self.shape, self.dtype, stack.label_axes)
        if run.follow:  # the run's features, kept on disk until the tracks are written
            # (a view of the model: other threads of a Dask worker share the model)
            self.model = self.model.with_feature_cache(scratch.features())
        if in_order and not run.probabilities:  # written as the frames are computed
            frames = (lab for _, lab in self.computed())
            write_output(final, layout, frames, describe=self.record)
        else:
            if run.probabilities:
                self.probs = scratch.array("p.npy", np.float32, (n, len(self.classes), *hw))
            self.labels = scratch.array("l.npy", self.dtype, (n, *hw))
            for i, lab in self.computed():
                self.labels[i] = lab
            if self.probs is not None:
                p_shape = (*stack.frame_sizes, len(self.classes), *hw)
                p_layout = Layout(p_shape, np.float32, stack.frame_axes + "CYX")
                write_output(
                    out / t.prob_output, p_layout, self.probs, self.record("probabilities")
                )
            write_output(final, layout, self.labels, self.record())
        if self.objects is not None:
            if isinstance(self.objects, _StackObjects3D):
                self.objects.split(run.instances)
            self.objects.write(t, out, self.shape, stack.label_axes, self.record)
        if run.options.into_input_store:
            from napari_sansa.dataset.input_store import add_to_input_store

            add_to_input_store(t, final, self.record())
        if self.objects is not None and run.tracks:  # the track stack is written last
            follow = self._follow() if run.follow else None
            self.objects.write_tracks(t, out, stack, self.record, follow, run.max_move)

    def _follow(self):
        """What carrying the stack's objects with SAM2 needs: the model, its frames as
        the run read them, and the run's pre-processing. The features on disk are only
        read from now on: a frame encoded again (its entry dropped for room) is held by
        the carrying while it is needed, and storing it would drop another frame's
        entry still to be read."""
        self.model.features.cache.disk.writable = False
        memory, segment = self.memory, self.run.segment
        return (
            self.model,
            self.stack,
            getattr(memory, "input_size", segment.input_size),
            getattr(memory, "intensity_range", segment.intensity_range),
        )

    def release(self) -> None:
        """Let go of the scratch arrays (before their files are removed)."""
        self.probs = self.labels = None
        if self.objects is not None:
            self.objects.arrays = None
            if isinstance(self.objects, _StackObjects3D):
                self.objects.planes = self.objects.chances = None

    def log_blank(self) -> None:
        blank = self.blank
        if blank:
            log.warning(
                "%s: %d constant frame(s) (%s) labelled all 0; listed in %s",
                self.t.source,
                len(blank),
                ", ".join(map(str, sorted(blank)[:10])) + (", ..." if len(blank) > 10 else ""),
                CSV_NAME,
            )

    def rows(self) -> list[dict]:
        """The stack's rows of ``scores.csv``, one per frame."""
        t, info, rows = self.t, {"frames": self.frames}, []
        for i, (sc, ar) in enumerate(zip(self.scores, self.areas, strict=True)):
            at = frame_at(info, i)
            if i in self.blank:
                rows.append(score_row(t, "blank", self.blank[i], frame=i, areas=ar, at=at))
            else:
                rows.append(score_row(t, "ok", frame=i, scores=sc, areas=ar, at=at))
        return rows


def _failed(t: Target, exc: InvalidInputError, rows, strict, on_frame, left: int) -> None:
    """``t`` failed: its row says why; ``left`` frames of it are counted as done."""
    rows.append(score_row(t, "failed", str(exc)))
    if strict:
        raise exc
    on_frame(t, left)


class _StackObjects:
    """The object maps of a stack's frames, kept in a memory-mapped scratch file (not
    in memory) as each frame's own ids, and written as one object stack whose ids are
    unique in the stack, those :func:`~napari_sansa.core.measures.stack_objects` gives."""

    def __init__(self, scratch: _Scratch, n: int, hw):
        self.scratch, self.n, self.hw = scratch, n, hw
        self.arrays = None  # the scratch map, made with the first frame's dtype
        self.tables: list = [None] * n
        self.last = [0] * n
        self.table = None  # the stack's table, once written

    def take(self, i: int, pred, lab) -> None:
        """Frame ``i``'s prediction (None: a blank frame) and its labels ``lab``."""
        self.add(i, None if pred is None else (pred.objects, pred.object_table))

    def add(self, i: int, pair) -> None:
        from napari_sansa.core.measures import last_id, object_table

        if pair is None:
            empty = np.zeros(self.hw, np.uint16)
            pair = (empty, object_table(empty, empty))
        obj, table = pair
        obj = np.asarray(obj)
        if self.arrays is None or np.dtype(obj.dtype).itemsize > self.arrays.dtype.itemsize:
            self._widen(np.promote_types(obj.dtype, np.uint32))
        self.arrays[i] = obj
        self.tables[i], self.last[i] = table, last_id(obj)

    def _widen(self, dtype) -> None:
        old = self.arrays
        new = self.scratch.array(f"o{np.dtype(dtype).itemsize}.npy", dtype, (self.n, *self.hw))
        if old is not None:
            new[:] = old
        self.arrays = new

    def write(self, t: Target, out, shape, axes, record) -> None:
        """The object stack of ``t`` (of ``shape`` and ``axes``) with its table in its
        record (``record(role, objects)``).

        Written after the label stack: a target counts as finished only when both are
        there (see ``records.done_record``), so an interruption in between redoes the
        stack."""
        from napari_sansa.core.measures import (
            object_dtype,
            renumbered,
            stack_offsets,
            stack_tables,
        )

        dtype = object_dtype(sum(self.last))
        offsets = stack_offsets(self.last)
        pages = (renumbered(self.arrays[f], offsets[f], dtype) for f in range(self.n))
        table = stack_tables(self.tables, self.last)
        layout = Layout(shape, dtype, axes)
        write_output(out / t.objects_output, layout, pages, record("objects", table))
        self.table, self.frame_offsets = table, offsets

    def write_tracks(
        self, t: Target, out, stack: TiffStack, record, follow=None, max_move=None
    ) -> None:
        """The tracks of the object stack just written (``--tracks``; see
        :mod:`~napari_sansa.dataset.tracks`), from the scratch maps, one time point at a
        time; ``follow``: ``(model, stack, input_size, intensity_range)`` to link on where
        SAM2 carries the objects (``--follow``); ``max_move``: the farthest a cell moves
        between two frames (``--max-move``; None: the linker's own)."""
        from napari_sansa.core.measures import object_dtype
        from napari_sansa.dataset.tracks import TimeFrames, stack_classes, write_stack_tracks

        n_objects = sum(self.last)
        frames = TimeFrames(
            self.arrays,
            self.frame_offsets,
            object_dtype(n_objects),
            stack.frame_axes,
            stack.frame_sizes,
        )
        classes = stack_classes(self.table)
        voxels = getattr(self, "voxels", None)
        spacing = None if voxels is None else voxels.spacing
        moved = None
        if follow is not None:
            from napari_sansa.dataset.tracks import carry_objects

            # a (T, Y, X) stack's carried masks reach max_move pixels (as in the viewer);
            # a T x Z stack's max_move is in the voxel size's units: their own reach
            reach = max_move if len(frames.shape) == 3 else None
            moved = carry_objects(t, self.scratch, frames, *follow, reach=reach)
        write_stack_tracks(
            t, out, self.scratch, frames, classes, record, n_objects, spacing, moved, max_move
        )


def _plain(run):
    """The run's SegmentOptions without objects (what the model runs for 3D objects)."""
    return replace(run.segment, instances=None)


def z_volumes(stack: TiffStack) -> list[tuple[dict, np.ndarray]] | None:
    """The stack's frames as volumes along its Z axis: ``(at, frames)`` per index of its
    other frame axes (``at``: that index per axis, ``{"t": 3}``; ``frames``: the frames
    of the volume, in z order); None when the stack has no Z axis."""
    axes, sizes = stack.frame_axes, tuple(stack.frame_sizes)
    if "Z" not in axes:
        return None
    z = axes.index("Z")
    index = np.moveaxis(np.arange(int(np.prod(sizes))).reshape(sizes), z, -1)
    others = [a.lower() for a in axes if a != "Z"]
    out = []
    for where in np.ndindex(index.shape[:-1]):
        at = {a: int(i) for a, i in zip(others, where, strict=True)}
        out.append((at, index[where]))
    return out


def _voxel_size(t: Target, stack: TiffStack, given):
    """The voxel size of ``t``'s 3D objects (given, from its metadata, or None: cubic),
    said in the log."""
    from napari_sansa.dataset.voxels import voxel_size_for

    found = voxel_size_for(t.source, given)
    if found is None:
        log.warning(
            "%s: 3D objects with cubic voxels: its metadata holds no voxel size (z, y, x); "
            "give it with --voxel-size Z,Y,X (spacing= in Python) when z planes are further "
            "apart than pixels",
            t.source,
        )
    else:
        log.info(
            "%s: 3D objects with the voxel size (z, y, x) %s %s (%s)",
            t.source,
            ", ".join(f"{v:g}" for v in found.spacing),
            found.unit,
            found.source,
        )
    return found


class _StackObjects3D(_StackObjects):
    """3D objects of a stack with a Z axis: its label planes (and probabilities) kept in
    scratch files as they come, each volume (time point) split in 3D once the stack is
    labelled; ids unique in the stack, volume after volume."""

    def __init__(self, scratch: _Scratch, n: int, hw, volumes, dtype, classes):
        super().__init__(scratch, n, hw)
        self.volumes, self.classes = volumes, list(classes)
        self.voxels = None  # a VoxelSize, or None: cubic voxels
        self.planes = scratch.array("ol.npy", dtype, (n, *hw))
        self.chances = scratch.array("op.npy", np.float32, (n, len(self.classes), *hw))
        self.tables = [None] * len(volumes)
        self.last = [0] * len(volumes)

    def take(self, i: int, pred, lab) -> None:
        self.planes[i] = lab
        if pred is None:
            self.chances[i] = 0
        else:
            self.chances[i] = np.stack([pred.probabilities[c] for c in self.classes])

    def split(self, options) -> None:
        """Split every volume into 3D objects (kept in the scratch object map)."""
        from napari_sansa.core.measures import last_id, object_table
        from napari_sansa.core.objects import split_objects

        spacing = None if self.voxels is None else self.voxels.spacing
        for v, (_, frames) in enumerate(self.volumes):
            cmap = np.asarray(self.planes[frames])
            probs = {c: np.asarray(self.chances[frames, k]) for k, c in enumerate(self.classes)}
            present = {int(c) for c in np.unique(cmap) if c}
            probs = {c: p for c, p in probs.items() if c in present}
            chosen = probs if options.split == "probability" else None
            obj = split_objects(cmap, chosen, spacing=spacing, **options.split_options())
            if self.arrays is None or obj.dtype.itemsize > self.arrays.dtype.itemsize:
                self._widen(np.promote_types(obj.dtype, np.uint32))
            self.arrays[frames] = obj
            self.tables[v] = object_table(obj, cmap, probs or None, spacing=spacing)
            self.last[v] = last_id(obj)

    def write(self, t: Target, out, shape, axes, record) -> None:
        """The object stack of ``t``: planes in file order, each volume's ids shifted to
        follow those of the volume before; its table (one row per 3D object, with the
        volume's index on the other frame axes, e.g. ``t``) and voxel size in its record."""
        from napari_sansa.core.measures import (
            COLUMNS_3D,
            ObjectTable,
            object_dtype,
            renumbered,
            stack_offsets,
        )

        dtype = object_dtype(sum(self.last))
        offsets = stack_offsets(self.last)
        volume_of = np.zeros(self.n, np.int64)
        for v, (_, frames) in enumerate(self.volumes):
            volume_of[frames] = v
        pages = (renumbered(self.arrays[f], offsets[volume_of[f]], dtype) for f in range(self.n))
        at_keys = list(self.volumes[0][0])
        columns: dict = {a: [] for a in at_keys} | {c: [] for c in COLUMNS_3D}
        for (at, _), table, offset in zip(self.volumes, self.tables, offsets, strict=True):
            for a in at_keys:
                columns[a].append(np.full(len(table), at[a], dtype=np.int64))
            for c in COLUMNS_3D:
                columns[c].append(table[c] + offset if c == "object" else table[c])
        table = ObjectTable({k: np.concatenate(v) for k, v in columns.items()})
        info = record("objects", table)
        info["objects"]["dims"] = "3d"
        info["voxel_size"] = None if self.voxels is None else self.voxels.record()
        layout = Layout(shape, dtype, axes)
        write_output(out / t.objects_output, layout, pages, info)
        # what write_tracks reads: the table, and each plane's shift (its volume's)
        self.table, self.frame_offsets = table, [offsets[v] for v in volume_of]


def _blank_frame(img, i: int) -> str | None:
    """Why frame ``i`` of a stack is blank (every pixel the same value), or None."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    if a.size == 0 or a.dtype.kind not in "biuf":
        return None
    lo, hi = a.min(), a.max()
    if lo != hi or lo != lo:  # varying, or NaN (which is not blank)
        return None
    return f"frame {i} is constant (every pixel is {lo}): nothing to segment, its labels are all 0"
