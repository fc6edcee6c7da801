"""Corrections and saving, the session's part that works on finished frames: take the
classes a person corrected as references, and save the output frames.

:class:`Corrections` is a base of :class:`~.session.SansaSession`; it uses the session's
``viewer``, ``notify``, ``fail``, ``output_layer`` and ``edited_frames``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sansa.core.fusion import label_dtype
from napari_sansa.napari import edits
from napari_sansa.napari.geometry import image_geometry, labels_array
from napari_sansa.napari.messages import classes_text, frames_text
from napari_sansa.napari.outputs import level_output_name, references_layer
from napari_sansa.napari.plan import NO_IMAGE


class Corrections:
    """Promotion of corrected frames to references, and saving (see the module)."""

    # -- corrections --------------------------------------------------------------------
    def promote(
        self, image, frame: int, classes=None, *, replace: bool = False, announce: bool = True
    ):
        """Take ``classes`` of ``frame`` of the output layer into the image's references
        layer (made if needed); the next run uses them as references. Returns that layer,
        or None (the reason is shown).

        ``classes``: the class ids to take, or "all"; by default those edited by hand
        since SANSA wrote the frame. A reference already on that frame is never changed unless
        ``replace`` (then the classes taken replace theirs there). ``announce``: also
        as a notification (errors always are).
        """
        if image is None:
            self.fail(NO_IMAGE)
            return None
        output = self.output_layer(image)
        if output is None:
            self.fail(
                f"there is no output layer '{level_output_name(image)}' yet: run SANSA first, "
                "then fix a frame in it"
            )
            return None
        geometry = image_geometry(image)
        where = geometry.describe(frame)
        index = geometry.index(frame)
        plane = edits.current(output, geometry, frame)
        if not plane.any():
            self.fail(
                f"{where} of '{output.name}' is empty: paint the objects in it (or run SANSA) "
                "before using it as a reference"
            )
            return None
        if classes is None:
            classes = edits.edited_classes(output, geometry, frame)
            if not classes:
                self.fail(
                    f"{where} of '{output.name}' has no hand edits since SANSA wrote it: paint "
                    "the corrections first, or choose the class to take"
                )
                return None
        if isinstance(classes, str) and classes == "all":
            classes = np.unique(plane)[1:].tolist()
        classes = tuple(sorted({int(c) for c in classes}))
        present = set(np.unique(plane).tolist())
        missing = [c for c in classes if c not in present]
        if missing:
            self.fail(f"{where} of '{output.name}' has no pixels of {classes_text(missing)}")
            return None
        active = self.viewer.layers.selection.active
        refs = references_layer(self.viewer, image, label_dtype(max(classes)))
        if active is not None and self.viewer.layers.selection.active is not active:
            self.viewer.layers.selection.active = active  # keep painting where they were
        if np.iinfo(refs.data.dtype).max < max(classes):
            self.fail(
                f"'{refs.name}' holds class ids up to {np.iinfo(refs.data.dtype).max} "
                f"({refs.data.dtype}): class {max(classes)} does not fit; rename that layer "
                "to start a new references layer"
            )
            return None
        current = geometry.plane(refs.data, frame)
        new = current.copy()
        if replace:
            new[np.isin(current, classes)] = 0
        for c in classes:
            new[plane == c] = c
        ours = [c for c in classes if np.any(current == c)]
        changed = (current != 0) & (new != current)
        if not replace and (ours or changed.any()):
            theirs = sorted(set(np.unique(current[current != 0]).tolist()))
            self.fail(
                f"{where} already has a reference in '{refs.name}' ({classes_text(theirs)}) that "
                "this would change: erase it there first, to take this frame's classes instead"
            )
            return None
        refs.data[index] = new  # in place: the layer keeps its array
        refs.refresh()
        if present - {0} <= set(classes):
            edits.accept(output, geometry, frame)  # the whole frame is a reference now
        self.notify(
            f"{where}: {classes_text(classes)} taken as a reference (in '{refs.name}'); the next "
            "run uses it",
            popup=announce,
        )
        return refs

    def promote_edited(self, image) -> list[int]:
        """Take the edited classes of every edited frame as references; returns the
        frames taken (a frame whose reference would change is left, with a message)."""
        frames = self.edited_frames(image)
        if not frames:
            output = self.output_layer(image)
            if output is None:
                self.promote(image, 0)  # says why: no image, or no output yet
            else:
                self.fail(f"no frame of '{output.name}' was edited by hand since SANSA wrote it")
            return []
        taken = [f for f in frames if self.promote(image, f, announce=False) is not None]
        if taken:
            self.notify(f"{frames_text(taken)}: now references; the next run uses them")
        return taken

    # -- saving -------------------------------------------------------------------------
    def save_frames(self, image, folder, fmt: str = "tif") -> list[str]:
        """Write the output layer of ``image`` as one file per frame; returns the paths."""
        from napari_sansa.napari.writer import write_frames

        output = self.output_layer(image)
        if output is None:
            self.fail("there is nothing to save yet: run SANSA first")
            return []
        if folder is None:
            self.fail("choose a folder to save the frames in ('save to')")
            return []
        try:
            paths = write_frames(folder, labels_array(output), fmt, prefix=image.name)
        except (OSError, ValueError) as exc:
            self.fail(f"could not save the frames: {exc}")
            return []
        self.notify(f"saved {len(paths)} frame(s) in {Path(folder)}")
        return paths
