"""The session's part for tracks: link after a run, correct, select, save (no Qt).

:class:`TrackCorrections` is a base of :class:`~.session.SansaSession`; it uses the
session's ``viewer``, ``notify``, ``fail``, ``create_worker``, ``objects`` and
``running``. The layers and the table are :class:`~.tracks_output.TracksOutput`'s.
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.napari.geometry import at_level, image_geometry, layer_role
from napari_sansa.napari.objects_output import objects_name
from napari_sansa.napari.tracks_output import TracksOutput, link_tracks, time_axis

__all__ = ["TrackCorrections"]


def _link(objects, classes, settings, spacing):
    """The worker's function: ``(tracks, table, note)``, or its user error as a message."""
    try:
        return (*link_tracks(objects, classes, settings, spacing), "")
    except (ValueError, MemoryError) as exc:  # InvalidInputError is a ValueError
        return f"the tracks could not be made: {exc}"


def _follow_and_link(objects, classes, settings, spacing, follow):
    """The worker's generator with 'follow with SAM2': yields ``(pairs done, pairs)`` as
    each frame's objects are carried into the next (napari's progress bar, the status),
    then returns as :func:`_link` does (None when stopped). ``follow``: ``(frames,
    model_settings, models, options, cancel)``: the run's frames, model, pre-processing
    and Stop; the features come from the model's feature cache, where the run left
    them."""
    from napari_sansa.core.propagation import ObjectPropagation
    from napari_sansa.napari.worker import leave_a_core_for_napari

    frames, model_settings, models, options, cancel = follow
    todo = len(objects) - 1
    try:
        with leave_a_core_for_napari(getattr(model_settings, "threads", None)):
            model = models.get(model_settings)
            run = ObjectPropagation(
                model,
                frames,
                input_size=options.input_size,
                intensity_range=options.intensity_range,
                reach=settings.max_distance if objects.ndim == 3 else None,  # 3D: scale units
                cancel=cancel,
            )
            moved = np.zeros_like(objects)
            pairs = 0
            for t, carried in run.frames(objects):
                moved[t] = carried
                pairs += 1
                yield pairs, todo
        if pairs < todo:
            return None
        note = ""
        if run.encoded:
            note = (
                f"; following the objects, SAM2 encoded {run.encoded} image(s) the run had "
                "not left in the feature cache (frames it did not label, or more frames than "
                "the cache holds: a larger cache in the model's settings keeps them)"
            )
        return (*link_tracks(objects, classes, settings, spacing, moved), note)
    except (ValueError, MemoryError) as exc:  # InvalidInputError is a ValueError
        return f"the tracks could not be made: {exc}"


class TrackCorrections:
    """Tracks of the last run with tracks (``tracks``: a TracksOutput or None)."""

    tracks_changed = Signal()  # the table changed (a linking, a correction, an undo)
    track_selected = Signal(int)  # a track was selected (a click, the table)

    tracks: TracksOutput | None = None
    track_note = ""  # why the last run with tracks made none (appended to its last message)
    _track_settings = None
    _track_source = None  # (plan, model settings, segment options) of the run with tracks
    _linking = None

    def _check_tracks(self, images, settings) -> str | None:
        """Why the run's tracks cannot be made (None: they can)."""
        if settings.tracks is None:
            return None
        hw = image_geometry(images[0]).hw if images else (0, 0)
        if settings.tracks.follow and settings.segment.tiled(hw):
            return (
                "'follow with SAM2' carries each object on whole frames: set the tile size "
                "to 0 (no tiles), or untick 'follow with SAM2'"
            )
        if len(images) != 1:
            return "tracks follow one time-lapse: choose one image (not 'with images') for tracks"
        _, problem = time_axis(images[0])
        opts = settings.segment.instances
        if problem is None and len(image_geometry(images[0]).frame_axes) == 2 and not opts.in_3d:
            return (
                f"tracks of the (T, Z) stack '{images[0].name}' link its 3D objects: untick "
                "'objects per plane' (and 'refine with SAM2', which works per plane)"
            )
        return problem

    def _runs_without_tracks(self, settings) -> None:
        """A run on the tracked image without tracks: the tracks shown are now of an
        earlier run (kept, with their corrections; saving them says so)."""
        if settings.tracks is None and self.tracks is not None and self.tracks.image in self.images:
            self.tracks.stale = True

    def _start_linking(self) -> bool:
        """After a run with tracks: link the objects in a worker (True: started)."""
        settings, self._track_settings = self._track_settings, None
        self.track_note = ""
        if settings is None or self.objects is None or not self.images:
            return False
        image = self.images[0]
        name = at_level(objects_name(image.name), image)
        layer = next(
            (x for x in self.viewer.layers if x.name == name and layer_role(x) == "objects"), None
        )
        if image not in self.viewer.layers or layer is None:
            gone = f"the image '{image.name}'" if layer is not None else f"the layer '{name}'"
            self.track_note = f"; no tracks: {gone} was removed"
            return False
        features = layer.features  # each object's class: {object id: class}
        classes = dict(zip(features["object"].tolist(), features["class"].tolist(), strict=True))
        objects = np.array(layer.data, copy=True)  # the person may edit it while it links
        spacing = None
        if objects.ndim == 4:  # 3D objects of a (T, Z) stack: their voxel size
            from napari_sansa.napari.objects_output import scale_spacing

            spacing = self.objects.options.spacing or scale_spacing(image, 1)
        self.tracks = TracksOutput(self.viewer, image, settings)
        follow = self._follow_source(objects) if settings.follow else None
        how = " following them with SAM2" if follow is not None else ""
        self.notify(
            f"linking the objects of {len(objects)} frames into tracks{how}...", popup=False
        )
        if follow is None:
            worker = self.create_worker(
                _link, objects, classes, settings, spacing, _start_thread=False
            )
        else:  # a generator: napari's progress bar, one step per pair of frames
            worker = self.create_worker(
                _follow_and_link, objects, classes, settings, spacing, follow,
                _progress={"total": max(len(objects) - 1, 1), "desc": "SANSA: following"},
                _start_thread=False,
            )  # fmt: skip
            worker.yielded.connect(self._on_followed)
        worker.returned.connect(self._on_linked)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_link_finished)
        self._linking = worker
        self.worker = worker
        worker.start()
        return True

    def _on_followed(self, step) -> None:
        """A pair of frames carried by SAM2 (the linking worker's progress)."""
        if not self.alive or self._stopped:
            return
        done, todo = step
        self.notify(f"following the objects with SAM2: {done} of {todo} frame pairs", popup=False)

    def _follow_source(self, objects):
        """What the worker needs to follow the objects with SAM2: the run's frames by
        time point, its model and pre-processing, and the Stop event."""
        from dataclasses import replace

        from napari_sansa.napari.tracks_output import time_lapse_frames

        plan, model_settings, options = self._track_source
        part = plan.parts[0]
        planes = objects.shape[1] if objects.ndim == 4 else None
        frames = time_lapse_frames(part.stack, objects.shape[0], planes)
        options = replace(options, intensity_range=part.intensity_range)
        return frames, model_settings, self.models, options, self._cancel

    def _on_linked(self, result) -> None:
        if not self.alive or self.tracks is None:
            return
        if result is None:  # stopped while following the objects: no tracks
            return
        if isinstance(result, str):
            self._failed = result
            self.notify(result, "error")
            return
        tracks, table, *note = result  # (a linking without following has no note)
        self.track_note = note[0] if note else ""
        self.tracks.show(tracks, table)
        self.tracks.changed.connect(self._on_tracks_painted)
        self._bind_clicks()
        self.tracks_changed.emit()

    def _on_link_finished(self) -> None:
        self._linking = None
        self.worker = None
        if not self.alive:
            return
        self.running.emit(False)
        if self._failed:
            self.notify(self._failed, popup=False)
            return
        if self._stopped:
            self.notify(f"stopped while linking: {self.done} frames, no tracks", popup=False)
            return
        n = len(self.tracks.tracks()) if self.tracks is not None else 0
        self.notify(f"done: {self.done} frames, {n} tracks{self.track_note}", popup=False)

    def _bind_clicks(self) -> None:
        out = self.tracks
        for layer in (out.labels, out.lines):
            if layer is not None and self._on_track_click not in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.append(self._on_track_click)

    def _on_track_click(self, layer, event):
        """A click on the track labels (in pan/zoom mode) or Tracks layer selects a track."""
        if self.tracks is None or getattr(layer, "mode", "pan_zoom") != "pan_zoom":
            return
        track = self.tracks.track_at(layer, event.position)
        if track is not None:
            self.select_track(track)

    # -- public actions ----------------------------------------------------------------
    def _track_output(self) -> TracksOutput | None:
        if self.tracks is None or self.tracks.table is None:
            self.fail("there are no tracks yet: tick 'tracks' (Options) and run a time-lapse")
            return None
        return self.tracks

    def merge_tracks(self, a: int, b: int) -> bool:
        """Merge tracks ``a`` and ``b``: the later one takes the earlier one's id (the
        layers and the table follow). False (with the reason) when it cannot be done."""
        return self._edit(lambda out: out.merge(int(a), int(b)))

    def split_track(self, track: int, frame: int | None = None) -> bool:
        """Split ``track`` at ``frame`` (default: the frame shown): a new track from
        that frame on."""
        out = self._track_output()
        if out is None:
            return False
        frame = self.shown_time() if frame is None else int(frame)
        return self._edit(lambda out: out.split(int(track), frame))

    def _edit(self, change) -> bool:
        out = self._track_output()
        if out is None:
            return False
        try:
            message = change(out)
        except InvalidInputError as exc:
            self.fail(str(exc))
            return False
        self.notify(message, popup=False)
        self.tracks_changed.emit()
        if out.selected is not None:
            self.track_selected.emit(out.selected)
        return True

    def undo_tracks(self) -> bool:
        """Undo the last merge, split or stroke painted on the track labels (napari's
        undo of that layer: the table follows, and the status says what was undone)."""
        out = self._track_output()
        if out is None:
            return False
        try:
            done = out.undo()
        except InvalidInputError as exc:  # the track labels layer was removed
            self.fail(str(exc))
            return False
        if done is None:
            self.fail("there is no track correction to undo (a merge, a split or painting)")
            return False
        return True

    def redo_tracks(self) -> bool:
        """Redo what the last undo undid."""
        out = self._track_output()
        if out is None:
            return False
        try:
            done = out.redo()
        except InvalidInputError as exc:
            self.fail(str(exc))
            return False
        if done is None:
            self.fail("there is nothing to redo on the tracks")
            return False
        return True

    def _on_tracks_painted(self, message: str) -> None:
        """A stroke on the track labels, an undo or a redo changed the tracks."""
        if not self.alive:
            return
        self.notify(message, popup=False)
        self.tracks_changed.emit()

    def select_track(self, track: int) -> str | None:
        """Select ``track``: its id, frames and parent in the status; the table shows it."""
        out = self._track_output()
        if out is None:
            return None
        text = out.select(int(track))
        self.notify(text, popup=False)
        self.track_selected.emit(int(track))
        return text

    def shown_time(self) -> int:
        """The frame (T index) the viewer shows for the tracked image."""
        out = self.tracks
        layer = out.labels if out.labels in self.viewer.layers else out.image
        data = np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)
        return int(np.clip(np.rint(data[0]), 0, layer.data.shape[0] - 1))

    def save_tracks(self, folder) -> list[str]:
        """Write the tracks (labels, tracks.csv, the CTC files) into ``folder``."""
        out = self._track_output()
        if out is None:
            return []
        if folder is None:
            self.fail("choose a folder to save the tracks in ('save to')")
            return []
        try:
            paths = out.save(folder)
        except (OSError, ValueError) as exc:
            self.fail(f"could not save the tracks: {exc}")
            return []
        said = f"saved {len(out.tracks())} tracks in {folder} (labels, tracks.csv, ctc/)"
        if out.stale:
            said += (
                f"; note: they were linked before the last run on '{out.image.name}', which "
                "made no tracks (tick 'tracks' and run again to link its objects)"
            )
        self.notify(said, "warning" if out.stale else "info")
        return paths
