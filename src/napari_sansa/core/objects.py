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

A ``(Z, Y, X)`` class map (a z-stack's planes) is split into 3D objects: connected in z
(6-connected voxels), touching objects separated by a 3D watershed, one id per object
across the planes. ``spacing=(z, y, x)``, the voxel size, makes the split respect
anisotropy: the distance to the border is measured in physical units
(``distance_transform_edt(sampling=spacing)``), and ``seed_distance`` (in pixels of the
plane) and the smoothing are the same physical length along every axis; without it the
voxels are taken as cubes. ``min_size`` then counts voxels.

Ids are 1, 2, ... in a fixed order (classes in ascending order, then the objects of a
class in the raster order of their first pixel (voxel: z, then row, then column)), so
the same inputs always give the same ids. The dtype is ``uint16``, or wider when there
are more objects: ids never wrap.

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
    check_spacing,
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
#: ``ObjectOptions.dims``: 3D objects in a stack with a Z axis, or objects per plane
DIMS = ("3d", "2d")
OPTION_NAMES = ("min_size", "seed_distance", "split", "refine", "dims", "spacing")


@dataclass(frozen=True)
class ObjectOptions:
    """How :func:`split_objects` splits a class map (``instances=`` of ``segment``);
    ``refine``: each object then refined by SAM2 with its box as the prompt (in a run).

    ``dims`` (runs over stacks with a Z axis): ``"3d"``, one object per nucleus across
    the planes (each time point of a T×Z stack split in 3D); ``"2d"``, objects per plane,
    as earlier versions did; None (the default): 3D, except in an output folder whose
    objects were made per plane by an earlier run, which stays per plane (said in the
    log). ``spacing``: the voxel size ``(z, y, x)`` of 3D objects; None: from each
    file's metadata (ImageJ or OME-TIFF), cubic voxels when it has none.
    """

    min_size: int = 10
    seed_distance: int = 5
    split: str = "distance"
    refine: bool = False
    dims: str | None = None
    spacing: tuple | None = None

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
        if self.dims is not None and str(self.dims).lower() not in DIMS:
            raise InvalidInputError(
                f"unknown dims {self.dims!r}: use '3d' (objects across the planes of a "
                "z-stack), '2d' (objects per plane) or None (3D, unless the output folder "
                "holds objects made per plane)"
            )
        if self.dims is not None:
            object.__setattr__(self, "dims", str(self.dims).lower())
        if self.refine and self.dims == "3d":
            raise InvalidInputError(
                "refine redraws each object by SAM2 in its plane: it works with objects per "
                "plane (dims='2d', --objects-per-plane), not with 3D objects"
            )
        object.__setattr__(self, "spacing", check_spacing(self.spacing, 3))
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
            unknown = set(value) - set(OPTION_NAMES)
            if unknown:
                raise InvalidInputError(
                    f"unknown instance options {sorted(unknown)}; use "
                    f"{', '.join(OPTION_NAMES[:-1])} and {OPTION_NAMES[-1]}"
                )
            return cls(**value)
        raise InvalidInputError(
            f"instances must be True, False, a dict of options ({', '.join(OPTION_NAMES)}) "
            f"or napari_sansa.ObjectOptions, got {value!r}"
        )

    def split_options(self) -> dict:
        """The keyword arguments of :func:`split_objects` for one plane (all but
        ``refine``, ``dims`` and ``spacing``)."""
        return {"min_size": self.min_size, "seed_distance": self.seed_distance, "split": self.split}

    @property
    def in_3d(self) -> bool:
        """Whether a stack with a Z axis gets 3D objects: ``dims`` "3d", or None without
        ``refine`` (which works per plane)."""
        return self.dims == "3d" or (self.dims is None and not self.refine)

    def record(self) -> dict:
        """The options as plain JSON values, as run records keep them: ``refine`` only
        when set, ``dims`` only when "3d" and ``spacing`` only when given (and not per
        plane, where it does not change the objects), so that the
        records of runs before them (objects per plane) are those of ``dims="2d"``.
        A dataset run resolves ``dims=None`` to "3d" or "2d" before it records it."""
        out = {"min_size": self.min_size, "seed_distance": self.seed_distance}
        out["split"] = self.split
        if self.refine:
            out["refine"] = True
        if self.dims == "3d":
            out["dims"] = "3d"
        if self.spacing is not None and self.dims != "2d":
            out["spacing"] = list(self.spacing)
        return out


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


def _relative(spacing, ndim: int) -> np.ndarray:
    """The voxel size in pixels of the plane (the smaller of y and x is 1)."""
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=np.float64)
    return sp / sp[-2:].min()


def _seeds_nd(mask, components, landscape, seed_distance: int, rel) -> np.ndarray:
    """Markers of one class's volume: local maxima of ``landscape`` at least
    ``seed_distance`` pixels of the plane apart in physical distance (``rel``: the voxel
    size in those pixels), and one seed for every component that got none."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    half = np.floor(seed_distance / rel).astype(int)
    grid = np.indices(tuple(2 * half + 1)).reshape(len(rel), -1).T - half
    inside = (((grid * rel) ** 2).sum(axis=1) <= seed_distance**2).reshape(tuple(2 * half + 1))
    top = ndi.maximum_filter(landscape, footprint=inside, mode="constant", cval=0.0)
    peaks = (landscape == top) & mask & (landscape > 0)
    # a flat plateau gives neighbouring maxima: one seed per plateau
    plateaus, n = ndi.label(peaks, structure=np.ones((3,) * mask.ndim, bool))
    markers = np.zeros(mask.shape, dtype=np.int64)
    if n:
        index = np.arange(1, n + 1)
        where = np.array(ndi.center_of_mass(peaks, plateaus, index)).reshape(n, -1)
        height = np.asarray(ndi.maximum(landscape, plateaus, index))
        # the highest first; a lower one within seed_distance of a kept one is dropped
        order = np.lexsort((index, -height))
        tree = cKDTree(where * rel)
        kept = np.zeros(n + 1, bool)
        gone = np.zeros(n + 1, bool)
        for i in order:
            if gone[i + 1]:
                continue
            kept[i + 1] = True
            for j in tree.query_ball_point(where[i] * rel, seed_distance - 1e-9):
                if j != i:
                    gone[j + 1] = True
        lookup = np.zeros(n + 1, np.int64)
        lookup[kept] = np.arange(1, int(kept.sum()) + 1)
        markers = lookup[plateaus]
        n = int(kept.sum())
    seeded = np.unique(components[markers > 0])
    missing = np.setdiff1d(np.arange(1, components.max() + 1), seeded)
    if missing.size:
        extra = np.isin(components, missing)
        markers[extra] = n + np.searchsorted(missing, components[extra]) + 1
    return markers


def _split_class(mask, prob, opts: ObjectOptions, spacing=None) -> np.ndarray:
    """Objects of one class mask (int labels, arbitrary order); a 3D mask (or a voxel
    size given) is split by :func:`_split_nd`."""
    from scipy import ndimage as ndi

    components, n = ndi.label(mask)
    if n == 0 or opts.split == "none":
        return components
    if mask.ndim != 2 or spacing is not None:
        return _split_nd(mask, prob, components, opts, _relative(spacing, mask.ndim))
    from skimage.segmentation import watershed

    if opts.split == "probability" and prob is not None:
        landscape = ndi.gaussian_filter(np.where(mask, prob, 0).astype(np.float32), 1.0)
    else:
        dist = ndi.distance_transform_edt(mask).astype(np.float32)
        landscape = ndi.gaussian_filter(dist, 1.0)  # no spurious maxima on a discrete ridge
    landscape[~mask] = 0
    markers = _seeds(mask, components, landscape, opts.seed_distance)
    return watershed(-landscape, markers, mask=mask)


def _split_nd(mask, prob, components, opts: ObjectOptions, rel) -> np.ndarray:
    """The watershed of one class's mask in 3D (or in 2D with anisotropic pixels):
    distances and seed distances in physical units (``rel``: the voxel size in pixels of
    the plane), smoothing of one plane pixel's physical length along every axis."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    sigma = tuple(1.0 / rel)
    if opts.split == "probability" and prob is not None:
        landscape = ndi.gaussian_filter(np.where(mask, prob, 0).astype(np.float32), sigma)
    else:
        dist = ndi.distance_transform_edt(mask, sampling=rel).astype(np.float32)
        landscape = ndi.gaussian_filter(dist, sigma)
    landscape[~mask] = 0
    markers = _seeds_nd(mask, components, landscape, opts.seed_distance, rel)
    labels = watershed(-landscape, markers, mask=mask)
    if mask.ndim == 3 and opts.split != "probability":
        labels = _merge_shallow(labels, landscape, SHALLOW_NECK)
    return labels


#: a watershed line in 3D whose distance is within this fraction of the lower of the two
#: objects' deepest distance is no neck between two objects but a ripple of the distance
#: map on coarse z planes (one object split in two): those regions are merged
SHALLOW_NECK = 0.1


def _merge_shallow(labels: np.ndarray, landscape: np.ndarray, fraction: float) -> np.ndarray:
    """``labels`` with neighbouring regions merged where the pass between them (the
    highest ``landscape`` on their common border) lies less than ``fraction`` of the
    lower region's peak below that peak (its "dynamic"; the deepest passes first). Two
    touching objects have a neck well below both centres; a discrete distance map on
    anisotropic voxels can have two maxima in one object with a pass just below them."""
    n = int(labels.max())
    if n < 2:
        return labels
    peak = np.zeros(n + 1, np.float64)
    np.maximum.at(peak, labels.ravel(), landscape.ravel())
    keys, passes = [], []
    for axis in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        border = (a != b) & (a > 0) & (b > 0)
        if border.any():
            a, b = a[border].astype(np.int64), b[border].astype(np.int64)
            keys.append(np.minimum(a, b) * (n + 1) + np.maximum(a, b))
            passes.append(np.minimum(landscape[tuple(lo)][border], landscape[tuple(hi)][border]))
    if not keys:
        return labels
    key, height = np.concatenate(keys), np.concatenate(passes).astype(np.float64)
    order = np.argsort(key, kind="stable")
    key, height = key[order], height[order]
    pairs, start = np.unique(key, return_index=True)
    height = np.maximum.reduceat(height, start)
    parent = np.arange(n + 1)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = False
    for k in np.lexsort((pairs, -height)):  # the highest passes first
        i, j = root(int(pairs[k] // (n + 1))), root(int(pairs[k] % (n + 1)))
        lower = min(peak[i], peak[j])
        if i != j and lower - height[k] < fraction * lower:
            parent[j] = i
            peak[i] = max(peak[i], peak[j])
            merged = True
    if not merged:
        return labels
    roots = np.array([root(i) for i in range(n + 1)])
    return roots[labels]


def split_objects(
    class_map,
    probabilities=None,
    *,
    min_size: int = 10,
    seed_distance: int = 5,
    split: str = "distance",
    spacing=None,
) -> np.ndarray:
    """One id per object in a ``(H, W)`` class map, or per 3D object in a ``(Z, Y, X)``
    one (0 = background).

    ``probabilities``: ``{class: map}`` (as ``Prediction.probabilities``; maps the shape
    of the class map), or one map when the class map has one class; used by
    ``split="probability"`` and not needed otherwise. ``spacing``: the voxel size
    ``(z, y, x)`` of a 3D class map (``(y, x)`` for a 2D one), in any one unit; None:
    cubic voxels (square pixels). Returns a new array of object ids the shape of the
    class map (0 = background), ids unique within it; a 3D object has one id in all its
    planes.
    """
    opts = ObjectOptions(min_size, seed_distance, split)
    cmap = check_class_map(class_map, volumes=True)
    spacing = check_spacing(spacing, cmap.ndim)
    classes = [int(c) for c in np.unique(cmap) if c != 0]
    if opts.split == "probability" and probabilities is None:
        raise InvalidInputError('split="probability" needs the probabilities of each class')
    probs = check_probabilities(probabilities, classes, cmap.shape)
    if cmap.ndim == 3 and spacing is None:
        spacing = (1.0, 1.0, 1.0)
    pieces = []
    total = 0
    for c in classes:
        labels = _split_class(cmap == c, probs.get(c), opts, spacing)
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
