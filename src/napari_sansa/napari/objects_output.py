"""One label per object: the "<image> [sansa objects]" layer and its features (no Qt).

With ``RunSettings.make(instances=ObjectOptions(...))`` the worker splits every finished
frame into objects (:func:`frame_objects`: the core's ``prediction.objects`` for a
labelled frame, the reference's own class map for a reference) and the session hands
each frame to :class:`ObjectsOutput`, which writes it into the image's object Labels
layer and its ``features`` (one row per object: ``index`` (the id, for napari's
hover), ``frame``, ``object``, ``class``, ``area``, centroid, box, ``mean_probability``).

Ids are unique within the stack. While a run goes, a frame's ids follow the largest
id already in the layer; when the run ends, :meth:`ObjectsOutput.finish` numbers the
whole stack again in frame order (frame 0's objects 1..n0, frame 1's next, ... and
within a frame the core's order), so that a re-run of the same inputs gives the same
ids, those of ``napari_sansa.stack_objects``. The integer type widens (uint32, then
uint64) rather than wrap.
"""

from __future__ import annotations

import numpy as np

from napari_sansa.napari.geometry import META_KEY, image_geometry, layer_role
from napari_sansa.napari.outputs import transform_kwargs

__all__ = [
    "FEATURE_COLUMNS",
    "ObjectsOutput",
    "frame_objects",
    "objects_name",
    "split_frame",
]

#: the object layer's feature columns, in order
FEATURE_COLUMNS = (
    "index", "frame", "object", "class", "area", "centroid_row", "centroid_col",
    "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_probability",
)  # fmt: skip


def objects_name(image_name: str) -> str:
    return f"{image_name} [sansa objects]"


def split_frame(labels, options, probabilities=None):
    """``(objects, table)`` of one class map with the run's ObjectOptions."""
    from napari_sansa.core.objects import object_table, split_objects

    probs = probabilities if options.split == "probability" else None
    objects = split_objects(labels, probs, **options.split_options())
    return objects, object_table(objects, labels, probabilities)


def frame_objects(pred, labels, masks: dict, options):
    """In the worker: ``(objects, table)`` of a finished frame, or None without
    ``options``. A reference's objects are those of its class map (the painted masks
    as they are, probability 1)."""
    if options is None:
        return None
    if not pred.is_reference:
        return pred.objects, pred.object_table
    probs = dict(pred.probabilities)
    probs.update({c: m.astype(np.float32) for c, m in masks.items()})
    probs = {c: p for c, p in probs.items() if c in set(np.unique(labels).tolist())} or None
    return split_frame(labels, options, probs)


def _dtype_for(n: int):
    return np.dtype(np.uint32) if n <= np.iinfo(np.uint32).max else np.dtype(np.uint64)


class ObjectsOutput:
    """The object layers of one run, one per image, made at their image's first frame."""

    def __init__(self, viewer, options, images):
        self.viewer = viewer
        self.options = options
        self.images = list(images)  # the run's image layers (an image set's parts)
        self._state: dict[int, dict] = {}  # part -> {"layer", "next", "image"}

    def layer(self, image):
        """The image's object layer (found by name and role, or made)."""
        import pandas as pd
        from napari.layers import Labels

        shape = image_geometry(image).shape
        for layer in self.viewer.layers:
            if (
                layer.name == objects_name(image.name)
                and isinstance(layer, Labels)
                and tuple(layer.data.shape) == shape
                and layer_role(layer) == "objects"
            ):
                return layer
        selection = self.viewer.layers.selection
        active = selection.active
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint32),
            name=objects_name(image.name),
            metadata={META_KEY: "objects"},
            features=pd.DataFrame(
                {c: pd.Series([], dtype=_column_dtype(c)) for c in FEATURE_COLUMNS}
            ),  # fmt: skip
            opacity=0.5,
            visible=True,
            **transform_kwargs(image),
        )
        if active is not None and active in self.viewer.layers:
            selection.active = active  # a run never takes the layer being worked on
        return layer

    def _start(self, part: int) -> dict:
        key, image = part, self.images[part]
        if key not in self._state:
            layer = self.layer(image)
            features = layer.features
            top = int(features["object"].max()) if len(features) else 0
            top = max(top, int(np.max(layer.data)) if layer.data.size else 0)
            self._state[key] = {"layer": layer, "next": top, "image": image}
        return self._state[key]

    def write(self, part: int, frame: int, pair) -> dict[int, int]:
        """Write ``(objects, table)`` as ``frame`` of the object layer of the run's image
        ``part`` (0 for one image); returns the frame's object count per class."""
        import pandas as pd

        state = self._start(part)
        image = state["image"]
        layer = state["layer"]
        if layer not in self.viewer.layers:
            return {}
        objects, table = pair
        objects = np.asarray(objects)
        n = int(objects.max()) if objects.size else 0
        offset = state["next"]
        self._widen(layer, offset + n)
        index = image_geometry(image).index(frame)
        plane = np.zeros(objects.shape, dtype=layer.data.dtype)
        fg = objects > 0
        plane[fg] = objects[fg].astype(layer.data.dtype) + offset
        layer.data[index] = plane
        state["next"] = offset + n
        rows = {c: np.asarray(v) for c, v in table.as_dict().items()}
        rows["object"] = rows["object"].astype(np.int64) + offset
        rows["index"] = rows["object"]
        rows["frame"] = np.full(len(table), int(frame), dtype=np.int64)
        old = layer.features
        old = old[old["frame"] != int(frame)] if "frame" in old.columns else old.iloc[:0]
        new = pd.DataFrame({c: rows[c] for c in FEATURE_COLUMNS})
        layer.features = _sorted(pd.concat([old[list(FEATURE_COLUMNS)], new],
                                           ignore_index=True))  # fmt: skip
        layer.refresh()
        return table.counts()

    @staticmethod
    def _widen(layer, top: int) -> None:
        if top > np.iinfo(layer.data.dtype).max:
            layer.data = np.asarray(layer.data).astype(_dtype_for(top))

    def finish(self) -> None:
        """Number every object layer of the run again in frame order (see the module)."""
        for state in self._state.values():
            layer = state["layer"]
            if layer in self.viewer.layers:
                renumber(layer, image_geometry(state["image"]))
        self._state.clear()


def renumber(layer, geometry) -> None:
    """Ids 1..n in frame order (a frame's objects in their id order), features to match."""
    features = _sorted(layer.features)
    if not len(features):
        return
    old_ids = features["object"].to_numpy(np.int64)
    new_ids = np.arange(1, len(features) + 1, dtype=np.int64)
    frames = features["frame"].to_numpy(np.int64)
    dtype = layer.data.dtype
    for f in np.unique(frames):
        rows = frames == f
        index = geometry.index(int(f))
        plane = np.asarray(layer.data[index])
        old = old_ids[rows]  # ascending
        pos = np.searchsorted(old, plane)
        pos = np.minimum(pos, len(old) - 1)
        hit = (plane > 0) & (old[pos] == plane)
        out = np.zeros(plane.shape, dtype=dtype)
        out[hit] = new_ids[rows][pos[hit]].astype(dtype)
        layer.data[index] = out
    features = features.copy()
    features["object"] = new_ids
    features["index"] = new_ids
    layer.features = features.reset_index(drop=True)
    layer.refresh()


def _sorted(features):
    return features.sort_values(["frame", "object"], kind="stable").reset_index(drop=True)


def _column_dtype(name: str) -> str:
    if name in ("centroid_row", "centroid_col", "mean_probability"):
        return "float64"
    return "int64"
