"""From a class map to objects: one id per object, and a table of measurements.

:func:`split_objects` splits every class of a class map into objects: the connected
components of the class, with touching objects separated by a watershed. Seeds are
the local maxima of the distance to the class's border (``split="distance"``, the
default: round or oval objects that touch along a short neck) or of the class
probability (``split="probability"``: objects that SANSA sees as separate bumps);
``split="none"`` keeps plain connected components. Two seeds are at least
``seed_distance`` pixels apart, so a larger value splits less. Objects smaller than
``min_size`` pixels are dropped (0 in the object map; the class map is not changed).
``ObjectOptions(refine=True)`` (``instances={"refine": True}`` in ``segment``) then
redraws each object's borders by a SAM2 decoder pass with its box as the prompt, on the
features the run computed (see :mod:`~napari_sansa.core.refine`).

Ids are 1, 2, ... in a fixed order (classes in ascending order, then the objects of a
class in the raster order of their first pixel), so the same inputs always give the
same ids. The dtype is ``uint16``, or wider when there are more objects: ids never wrap.

:func:`object_table` (in :mod:`~napari_sansa.core.measures`, importable from here)
measures each object: class, area, centroid, bounding box and mean probability.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.measures import (
    ObjectTable,
    check_class_map,
    check_probabilities,
    object_dtype,
    object_table,
    stack_objects,
)

__all__ = [
    "SPLITS",
    "ObjectOptions",
    "ObjectTable",
    "object_table",
    "split_objects",
    "stack_objects",
]

SPLITS = ("distance", "probability", "none")


@dataclass(frozen=True)
class ObjectOptions:
    """How :func:`split_objects` splits a class map (``instances=`` of ``segment``);
    ``refine``: each object then refined by SAM2 with its box as the prompt (in a run)."""

    min_size: int = 10
    seed_distance: int = 5
    split: str = "distance"
    refine: bool = False

    def __post_init__(self):
        for name in ("min_size", "seed_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidInputError(f"{name} must be a whole number of pixels, got {value!r}")
        if self.min_size < 0:
            raise InvalidInputError(
                f"min_size must be >= 0 pixels (0 keeps every object), got {self.min_size}"
            )
        if self.seed_distance < 1:
            raise InvalidInputError(
                f"seed_distance must be >= 1 pixel (the smallest distance between two objects' "
                f"centres), got {self.seed_distance}"
            )
        if self.split not in SPLITS:
            raise InvalidInputError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")
        if not isinstance(self.refine, (bool, np.bool_)):
            raise InvalidInputError(f"refine must be True or False, got {self.refine!r}")
        object.__setattr__(self, "refine", bool(self.refine))
        object.__setattr__(self, "min_size", int(self.min_size))
        object.__setattr__(self, "seed_distance", int(self.seed_distance))

    @classmethod
    def make(cls, value) -> ObjectOptions | None:
        """``instances=`` as given to ``segment``: False/None (off), True (defaults), a dict
        of options, or an :class:`ObjectOptions`."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"min_size", "seed_distance", "split", "refine"}
            if unknown:
                raise InvalidInputError(
                    f"unknown instance options {sorted(unknown)}; use min_size, seed_distance, "
                    "split and refine"
                )
            return cls(**value)
        raise InvalidInputError(
            "instances must be True, False, a dict of options (min_size, seed_distance, split, "
            f"refine) or napari_sansa.ObjectOptions, got {value!r}"
        )

    def split_options(self) -> dict:
        """The keyword arguments of :func:`split_objects` (all but ``refine``)."""
        return {"min_size": self.min_size, "seed_distance": self.seed_distance, "split": self.split}


def _seeds(mask, components, landscape, seed_distance: int) -> np.ndarray:
    """Markers for the watershed of one class: local maxima of ``landscape`` at least
    ``seed_distance`` apart, and one seed for every component that got none."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    peaks = peak_local_max(
        landscape,
        min_distance=seed_distance,
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a flat plateau gives neighbouring maxima: merge seeds that touch
    markers, n = ndi.label(markers > 0)  # 4-connected, as the components
    seeded = np.unique(components[markers > 0])
    missing = np.setdiff1d(np.arange(1, components.max() + 1), seeded)
    if missing.size:
        # a component without a maximum (e.g. a plateau at its border): its own seed
        extra = np.isin(components, missing)
        markers[extra] = n + np.searchsorted(missing, components[extra]) + 1
    return markers


def _split_class(mask, prob, opts: ObjectOptions) -> np.ndarray:
    """Objects of one class mask (int labels, arbitrary order)."""
    from scipy import ndimage as ndi

    components, n = ndi.label(mask)
    if n == 0 or opts.split == "none":
        return components
    from skimage.segmentation import watershed

    if opts.split == "probability" and prob is not None:
        landscape = ndi.gaussian_filter(np.where(mask, prob, 0).astype(np.float32), 1.0)
    else:
        dist = ndi.distance_transform_edt(mask).astype(np.float32)
        landscape = ndi.gaussian_filter(dist, 1.0)  # no spurious maxima on a discrete ridge
    landscape[~mask] = 0
    markers = _seeds(mask, components, landscape, opts.seed_distance)
    return watershed(-landscape, markers, mask=mask)


def split_objects(
    class_map,
    probabilities=None,
    *,
    min_size: int = 10,
    seed_distance: int = 5,
    split: str = "distance",
) -> np.ndarray:
    """One id per object in a ``(H, W)`` class map (0 = background).

    ``probabilities``: ``{class: (H, W) map}`` (as ``Prediction.probabilities``), or one
    map when the class map has one class; used by ``split="probability"``. Returns a
    new ``(H, W)`` array of object ids (0 = background), ids unique within the image.
    """
    opts = ObjectOptions(min_size, seed_distance, split)
    cmap = check_class_map(class_map)
    classes = [int(c) for c in np.unique(cmap) if c != 0]
    if opts.split == "probability" and probabilities is None:
        raise InvalidInputError('split="probability" needs the probabilities of each class')
    probs = check_probabilities(probabilities, classes, cmap.shape)
    pieces = []
    total = 0
    for c in classes:
        labels = _split_class(cmap == c, probs.get(c), opts)
        ids = _ordered(labels, opts.min_size)
        pieces.append((labels, ids))
        total += int(ids.max()) if ids.size else 0
    out = np.zeros(cmap.shape, dtype=object_dtype(total))
    offset = 0
    for labels, ids in pieces:
        if not ids.size:
            continue
        new = ids[labels]
        keep = new > 0
        out[keep] = new[keep] + offset
        offset += int(ids.max())
    return out


def _ordered(labels: np.ndarray, min_size: int) -> np.ndarray:
    """A lookup ``old label -> new id`` (0 dropped) numbering the objects of ``labels`` in
    the raster order of their first pixel, those under ``min_size`` pixels left out."""
    flat = labels.ravel()
    n = int(flat.max()) if flat.size else 0
    lookup = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return lookup
    area = np.bincount(flat, minlength=n + 1)
    present, first = np.unique(flat, return_index=True)
    order = present[np.argsort(first, kind="stable")]
    order = order[(order != 0) & (area[order] >= max(min_size, 1))]
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup


def objects_of(prediction) -> np.ndarray:
    """``prediction.objects``: its class map split with its ``object_options`` (not
    refined: refinement needs the run's features, see :func:`with_objects`)."""
    opts = prediction.object_options or ObjectOptions()
    probs = prediction.probabilities if opts.split == "probability" else None
    return split_objects(prediction.labels, probs, **opts.split_options())


def with_objects(predictions, options: ObjectOptions, refiner=None):
    """The predictions of a run, each split into objects as it comes (``instances=``);
    with ``options.refine``, each target's objects refined by ``refiner`` (a
    :class:`~napari_sansa.core.refine.RunRefiner` watching the run's targets)."""
    import dataclasses

    try:
        for p in predictions:
            q = dataclasses.replace(p, object_options=options)
            if refiner is not None and not p.is_reference:
                objects, table = refiner.refine(q)
                q.__dict__["objects"], q.__dict__["object_table"] = objects, table
            else:
                q.objects  # noqa: B018 - computed now, inside the run
            yield q
    finally:
        if refiner is not None:
            refiner.close()
