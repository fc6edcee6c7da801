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

3D objects: when the image has an axis named "z" (its ``axis_labels``) and the run's
``ObjectOptions`` ask for 3D objects (``dims`` "3d", or None without ``refine``), the
run's end replaces the per-plane objects shown while it goes by 3D objects
(:func:`objects_3d`): the labels of each volume (each index of the other frame axes,
e.g. each time point) split together with the voxel size of ``ObjectOptions.spacing``
or, when none is given, the image layer's ``scale`` (z, y, x); one id per object across
the planes, unique in the layer (a time point's ids follow the previous one's); the
features then have the 3D columns (:data:`FEATURE_COLUMNS_3D`: ``frame`` is the
volume's index, ``volume``, ``physical_volume``, z centroid and box), with
``mean_probability`` from the run's probability layers when it wrote them (NaN
without).
"""

from __future__ import annotations

import numpy as np

from napari_sansa.napari.geometry import META_KEY, at_level, image_geometry, layer_role
from napari_sansa.napari.outputs import transform_kwargs

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_COLUMNS_3D",
    "ObjectsOutput",
    "objects_3d",
    "frame_objects",
    "objects_name",
    "split_frame",
]

#: the object layer's feature columns, in order
FEATURE_COLUMNS = (
    "index", "frame", "object", "class", "area", "centroid_row", "centroid_col",
    "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_probability",
)  # fmt: skip


#: the feature columns of an object layer of 3D objects
FEATURE_COLUMNS_3D = (
    "index", "frame", "object", "class", "volume", "physical_volume", "centroid_z",
    "centroid_row", "centroid_col", "bbox_min_z", "bbox_min_row", "bbox_min_col",
    "bbox_max_z", "bbox_max_row", "bbox_max_col", "mean_probability",
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
        from napari.layers import Labels

        shape = image_geometry(image).shape
        for layer in self.viewer.layers:
            if (
                layer.name == at_level(objects_name(image.name), image)
                and isinstance(layer, Labels)
                and tuple(layer.data.shape) == shape
                and layer_role(layer) == "objects"
            ):
                return layer
        selection = self.viewer.layers.selection
        active = selection.active
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint32),
            name=at_level(objects_name(image.name), image),
            metadata={META_KEY: "objects"},
            features=_empty(FEATURE_COLUMNS),
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
            if "volume" in layer.features.columns:  # 3D objects of an earlier run: replaced
                layer.data = np.zeros(layer.data.shape, layer.data.dtype)
                layer.features = _empty(FEATURE_COLUMNS)
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

    def finish(self, labels=None, probabilities=None) -> None:
        """Number every object layer of the run again in frame order, or make its 3D
        objects from the labels (see the module). ``labels``: the run's output layer
        per image part; ``probabilities``: its probability layers per part,
        ``{class: layer}``."""
        labels, probabilities = labels or {}, probabilities or {}
        for part, state in self._state.items():
            layer = state["layer"]
            if layer not in self.viewer.layers:
                continue
            geometry = image_geometry(state["image"])
            output = labels.get(part)
            z = z_axis(geometry)
            if self.options.in_3d and z is not None and output in self.viewer.layers:
                probs = {
                    c: p for c, p in probabilities.get(part, {}).items() if p in self.viewer.layers
                }
                spacing = self.options.spacing or scale_spacing(state["image"], z)
                objects_3d(layer, output, geometry, z, spacing, probs, self.options)
            else:
                renumber(layer, geometry)
        self._state.clear()


def z_axis(geometry) -> int | None:
    """The position (among the leading axes) of the frame axis named "z", or None."""
    for k in geometry.frame_axes:
        if k < len(geometry.axis_names) and geometry.axis_names[k].lower() == "z":
            return k
    return None


def scale_spacing(image, z: int):
    """The voxel size ``(z, y, x)`` of an image layer's ``scale``; None when it is all
    one value (unknown, or cubic: the same)."""
    scale = [float(v) for v in np.asarray(image.scale)]
    spacing = (scale[z], scale[-2], scale[-1])
    ok = all(np.isfinite(v) and v > 0 for v in spacing)
    return spacing if ok and len(set(spacing)) > 1 else None


def objects_3d(
    layer, output, geometry, z: int, spacing=None, probabilities=None, options=None
) -> None:
    """Fill the object ``layer`` with the 3D objects of the ``output`` Labels layer:
    each volume along the leading axis ``z`` split in 3D with ``options`` (an
    ObjectOptions), ids unique in the layer (volume after volume), features with
    :data:`FEATURE_COLUMNS_3D`; ``probabilities``: ``{class: layer}`` for their mean."""
    import pandas as pd

    from napari_sansa.core.measures import object_dtype
    from napari_sansa.core.objects import ObjectOptions, object_table, split_objects

    opts = options or ObjectOptions()
    frame_axes = list(geometry.frame_axes)
    others = [k for k in frame_axes if k != z]
    other_sizes = [geometry.leading[k] for k in others]
    pieces, offset = [], 0
    for v, where in enumerate(np.ndindex(*other_sizes)):
        index = [slice(None)] * len(geometry.leading)
        for k, i in zip(others, where, strict=True):
            index[k] = i
        if geometry.channel_axis is not None:
            index[geometry.channel_axis] = 0  # labels are the same on every channel
        index = tuple(index)
        cmap = np.asarray(output.data[index])
        present = {int(c) for c in np.unique(cmap) if c}
        probs = {c: np.asarray(p.data[index], np.float32) for c, p in (probabilities or {}).items()}
        probs = {c: p for c, p in probs.items() if c in present} or None
        chosen = probs if opts.split == "probability" else None
        obj = split_objects(cmap, chosen, spacing=spacing, **opts.split_options())
        table = object_table(obj, cmap, probs, spacing=spacing)
        pieces.append((index, obj, table, v, offset))
        offset += int(obj.max()) if obj.size else 0
    dtype = np.promote_types(object_dtype(offset), np.uint32)
    data = np.zeros(layer.data.shape, dtype=dtype)
    rows = []
    for index, obj, table, v, shift in pieces:
        plane = np.zeros(obj.shape, dtype)
        fg = obj > 0
        plane[fg] = obj[fg].astype(dtype) + shift
        if geometry.channel_axis is not None:
            full = list(index)
            full[geometry.channel_axis] = slice(None)
            data[tuple(full)] = np.expand_dims(plane, _channel_position(geometry, index))
        else:
            data[index] = plane
        cols = {c: np.asarray(val) for c, val in table.as_dict().items()}
        cols["object"] = cols["object"].astype(np.int64) + shift
        cols["index"] = cols["object"]
        cols["frame"] = np.full(len(table), v, dtype=np.int64)
        rows.append(pd.DataFrame({c: cols[c] for c in FEATURE_COLUMNS_3D}))
    layer.data = data
    layer.features = pd.concat(rows, ignore_index=True) if rows else _empty(FEATURE_COLUMNS_3D)
    layer.refresh()


def _channel_position(geometry, index) -> int:
    """Where the channel axis sits in a volume taken with ``index`` (its integer
    entries removed)."""
    return sum(1 for k in range(geometry.channel_axis) if isinstance(index[k], slice))


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


def _empty(columns):
    """Features of no object, with ``columns`` of their types."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=_column_dtype(c)) for c in columns})


def _column_dtype(name: str) -> str:
    if name.startswith("centroid_") or name in ("mean_probability", "physical_volume"):
        return "float64"
    return "int64"
