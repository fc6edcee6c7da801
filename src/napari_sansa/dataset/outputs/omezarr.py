"""OME-Zarr outputs (``--format ome-zarr``): NGFF 0.4 stores on zarr v2, written chunk by chunk.

**Version.** New stores are OME-NGFF 0.4 on zarr v2 (``.zgroup`` / ``.zattrs`` / ``.zarray``
files, chunks under ``/``-separated keys): every OME-Zarr reader in use reads 0.4
(ome-zarr-py and so napari-ome-zarr, Fiji's N5/MoBIE/BigDataViewer readers, QuPath,
webKnossos, bioio-ome-zarr), while 0.5 needs zarr v3 support, which ome-zarr-py 0.12+
and zarr-python 3 have but not every Java reader yet. A labels group added to a user's
own image store (:func:`add_labels`) follows that store's version instead: 0.4 on zarr
v2, 0.5 on zarr v3 (attributes under ``"ome"``).

**Layout.** Each output is a store of its own next to the target's other outputs:

- ``<name>.ome.zarr``, the labels: its root is an NGFF ``labels`` group
  (``{"labels": ["sansa"]}``) and ``sansa/`` the image-label: a multiscale label image
  with ``image-label`` metadata (a colour per class, ``properties`` naming each class);
- ``<name>_objects.ome.zarr`` (``--instances``): the same with ``objects/``, the object ids;
- ``<name>_probabilities.ome.zarr`` (``--probabilities``): an NGFF multiscale image at
  its root (float32, a channel axis ``c``, one channel per class, in class order).

ome-zarr's reader (and napari-ome-zarr) opens each store as it is. napari-sansa's record
of the output (see :mod:`~napari_sansa.dataset.records`) is the ``napari_sansa``
attribute of the store's root (and of the label group).

**Pyramid.** Level 0 is the full resolution; each further level keeps every second row
and column of the one before (nearest neighbour: a label stays a label, and a
probability one the model gave) until a level fits in one chunk (512 x 512); only Y and
X are downsampled. Each level's ``coordinateTransformations`` scale the input's pixel
sizes (when known) by 2 per level.

**Streaming.** Level 0 is written as the results come: a plane in bands of chunk rows,
or the blocks of a tiled run (each tile's kept part, of every class for probabilities)
where they belong (zarr merges a block into the chunks it touches); once it is complete
each further level is made from the one before, a chunk at a time. Nothing of the
image's size is held (nor a band of its width), and each target's stores are written by
the one process that computed it (Dask workers write distinct stores).

**Atomicity.** A store is written under a temporary name next to its final one
(``.napari-sansa-tmp.<name>.ome.zarr.<32 hex>.partial/``; its record is written last) and
renamed when complete. A store under its final name is therefore complete; an
interrupted one is a temporary folder, removed by the next run (under the output
folder's lock), which writes the target again. Replacing an older store of ours renames
it away first and removes it after the new one is in place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from napari_sansa.core.atomic import temporary_path, write_text_atomic
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.outputs.base import Blocks, Layout, OutputWriter

__all__ = [
    "LABEL_NAME",
    "NGFF_VERSION",
    "OmeZarrWriter",
    "add_label_name",
    "add_labels",
    "read_store_attrs",
]

NGFF_VERSION = "0.4"
#: the name of the label group in napari-sansa's label stores (and, by default, the one
#: added to a user's image store)
LABEL_NAME = "sansa"
OBJECTS_NAME = "objects"
#: the chunks' side in Y and X
CHUNK = 512
#: colours of classes 1, 2, ... (RGBA 0-255), then repeating; 0 is transparent
PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def _store_axes(axes: str) -> tuple[str, list[int]]:
    """NGFF's order of ``axes`` (time, channel, any other, then space: z, y, x) and, per
    store axis, its position in ``axes``."""
    rank = {"t": 0, "c": 1, "z": 3, "y": 4, "x": 5}
    order = sorted(range(len(axes)), key=lambda k: (rank.get(axes[k], 2), k))
    return "".join(axes[k] for k in order), order


def _axes_of(layout: Layout, role: str) -> str:
    """The lowercase axes of an output of ``layout`` (an image's have none recorded)."""
    if layout.axes:
        return layout.axes.lower()
    n = len(layout.shape)
    lead = "c" if role == "probabilities" else "tzq"
    return (lead[: n - 2] if n > 2 else "") + "yx"


def read_store_attrs(path) -> dict | None:
    """The attributes of the zarr group at ``path`` (v2 ``.zattrs`` or v3 ``zarr.json``),
    without zarr; None when it is not a group that can be read."""
    path = Path(path)
    try:
        if (path / "zarr.json").is_file():
            meta = json.loads((path / "zarr.json").read_text("utf-8"))
            attrs = meta.get("attributes", {}) if meta.get("node_type") == "group" else None
        elif (path / ".zgroup").is_file():
            attrs = json.loads((path / ".zattrs").read_text("utf-8"))
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) else None


class _Levels:
    """The arrays ``0``, ``1``, ... of a multiscale image in a zarr ``group``: level 0
    written by regions (:meth:`put`), the others made from it once it is complete
    (:meth:`build`), a chunk at a time (see the module)."""

    def __init__(self, group, shape, dtype, axes: str, chunk: int = CHUNK):
        import numcodecs

        self.axes, self.order = _store_axes(axes)
        self.lead = tuple(shape[:-2])
        self.lead_order = self.order[:-2]
        h, w = shape[-2:]
        self.hw = (h, w)
        self.chunk = chunk
        self.steps = [1]
        while max(math.ceil(h / self.steps[-1]), math.ceil(w / self.steps[-1])) > chunk:
            self.steps.append(self.steps[-1] * 2)
        v2 = group.info._zarr_format == 2
        self.arrays = []
        for k, s in enumerate(self.steps):
            hw = (math.ceil(h / s), math.ceil(w / s))
            full = tuple(shape[p] for p in self.lead_order) + hw
            extra = (
                {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
                if v2
                else {"dimension_names": list(self.axes)}
            )
            self.arrays.append(
                group.create_array(
                    str(k),
                    shape=full,
                    chunks=(1,) * len(self.lead) + (min(chunk, hw[0]), min(chunk, hw[1])),
                    dtype=dtype,
                    fill_value=0,
                    compressors=numcodecs.Zlib(level=1) if v2 else None,
                    **extra,
                )
            )

    def put(self, index, rows: slice, cols: slice, data: np.ndarray) -> None:
        """Write ``data`` into level 0 at ``rows``, ``cols`` of the plane ``index`` (its
        position on the lead axes, in the layout's order), or of every plane
        (``index=None``: ``data`` is ``(*lead, rows, cols)``)."""
        if index is None:
            n = len(self.lead)
            data = data.transpose(*self.lead_order, n, n + 1)
            self.arrays[0][(Ellipsis, rows, cols)] = data
        else:
            where = tuple(index[p] for p in self.lead_order)
            self.arrays[0][(*where, rows, cols)] = data

    def build(self) -> None:
        """Make every level after the first from the one before (every second row and
        column), one chunk at a time."""
        c = self.chunk
        for k in range(1, len(self.steps)):
            src, dst = self.arrays[k - 1], self.arrays[k]
            h, w = dst.shape[-2:]
            for where in np.ndindex(*dst.shape[:-2]):
                for r in range(0, h, c):
                    for q in range(0, w, c):
                        part = src[(*where, slice(2 * r, 2 * (r + c)), slice(2 * q, 2 * (q + c)))]
                        part = np.asarray(part)[..., ::2, ::2]
                        dst[
                            (*where, slice(r, r + part.shape[-2]), slice(q, q + part.shape[-1]))
                        ] = part

    def multiscales(self, name: str, sizes: dict, version: str | None) -> dict:
        """The ``multiscales`` entry of these levels (``sizes``: axis -> (size, unit))."""
        axes = []
        for a in self.axes:
            axis = {"name": a}
            if a in _AXIS_TYPES:
                axis["type"] = _AXIS_TYPES[a]
            if a in sizes and sizes[a][1]:
                axis["unit"] = sizes[a][1]
            axes.append(axis)
        datasets = []
        for k, s in enumerate(self.steps):
            scale = [float(sizes.get(a, (1.0, None))[0]) for a in self.axes]
            scale[-2] *= s
            scale[-1] *= s
            datasets.append(
                {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        entry = {"name": name, "axes": axes, "datasets": datasets, "type": "nearest"}
        entry["metadata"] = {"description": "every second row and column of the level before"}
        return {**({"version": version} if version else {}), **entry}


def _ngff(attrs: dict, zarr_format: int) -> dict:
    """``attrs`` as a group of that zarr format holds NGFF metadata (0.5: under "ome")."""
    if zarr_format == 2:
        return attrs
    return {"ome": {"version": "0.5", **attrs}}


def _label_metadata(classes, role: str, version: str | None, source: str | None) -> dict:
    """The ``image-label`` metadata of a label image of ``classes`` (objects: none)."""
    meta: dict = {}
    if version:
        meta["version"] = version
    if role != "objects" and classes:
        colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
        colors += [
            {"label-value": int(c), "rgba": [*PALETTE[(int(c) - 1) % len(PALETTE)], 255]}
            for c in classes
        ]
        meta["colors"] = colors
        meta["properties"] = [{"label-value": int(c), "class": f"class {int(c)}"} for c in classes]
    if source is not None:
        meta["source"] = {"image": source}
    return meta


def _remove_tree(path: Path) -> None:
    """Remove the folder ``path`` (never through a link)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def replace_store(tmp: Path, final: Path) -> None:
    """Move the complete store ``tmp`` to ``final``: an older store there is renamed to a
    temporary name first and removed once the new one is in place."""
    old = None
    if final.exists() or final.is_symlink():
        old = temporary_path(final)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        _remove_tree(old)


class OmeZarrWriter(OutputWriter):
    """An output as an OME-Zarr store (see the module). Planes are written as they come;
    :class:`Blocks` (the regions of a tiled run, in any order, each ``(*lead, rows,
    cols)``: a block of every plane, e.g. of every class's probabilities) are written
    where they belong, so that any output of a tiled image is written by tiles."""

    suffix = ".ome.zarr"
    block = CHUNK
    takes_blocks = True

    def open(self, layout: Layout, record: dict | None = None) -> OmeZarrWriter:
        import zarr

        self.layout = layout
        self._record = record
        if len(layout.shape) > 5:
            raise InvalidInputError(
                f"{self.path}: an OME-Zarr image has at most 5 axes (t, c, z, y, x), this "
                f"output has {len(layout.shape)}: write it as TIFF (--format tiff)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_path(self.path)
        self._root = zarr.open_group(str(self._tmp), mode="w-", zarr_format=2)
        self._levels = None
        return self

    def _role(self, record) -> str:
        return (record or {}).get("output") or "labels"

    def _make_levels(self, role: str) -> _Levels:
        lay = self.layout
        group = self._root
        if role != "probabilities":
            group = self._root.create_group(OBJECTS_NAME if role == "objects" else LABEL_NAME)
        return _Levels(group, lay.shape, lay.dtype, _axes_of(lay, role))

    def write(self, frames) -> None:
        lay = self.layout
        levels = self._levels = self._make_levels(self._role(self._record))
        lead = lay.shape[:-2]
        h, w = lay.shape[-2:]
        if isinstance(frames, Blocks):
            for rows, cols, block in frames:
                levels.put(None, rows, cols, np.asarray(block, dtype=lay.dtype))
        elif lay.tile is not None:
            raise ValueError("OME-Zarr outputs take Blocks, not TIFF tiles")
        else:
            if isinstance(frames, np.ndarray):
                arr = frames.reshape(-1, h, w)
                frames = (arr[i] for i in range(arr.shape[0]))
            count = 0
            for i, plane in enumerate(frames):
                index = tuple(int(k) for k in np.unravel_index(i, lead)) if lead else ()
                for r in range(0, h, CHUNK):
                    band = np.asarray(plane[r : r + CHUNK], dtype=lay.dtype)
                    levels.put(index, slice(r, r + band.shape[0]), slice(0, w), band)
                count += 1
            if count != max(1, math.prod(lead)):
                raise ValueError(f"{count} planes were written of {math.prod(lead)}")
        levels.build()

    def describe(self, record: dict) -> None:
        self._record = record

    def finish(self) -> Path:
        try:
            self._write_metadata()
            replace_store(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def _write_metadata(self) -> None:
        record = self._record or {}
        role = self._role(record)
        levels = self._levels
        sizes = pixel_sizes(record.get("source"))
        name = OBJECTS_NAME if role == "objects" else LABEL_NAME
        ms = {"multiscales": [levels.multiscales(name, sizes, NGFF_VERSION)]}
        if role == "probabilities":
            classes = record.get("classes") or []
            ms["omero"] = _omero(classes)
            root_attrs = {**ms, "napari_sansa": record}
        else:
            label = _label_metadata(record.get("classes"), role, NGFF_VERSION, None)
            group = self._root[name]
            group.attrs.update({**ms, "image-label": label, "napari_sansa": record})
            root_attrs = {"labels": [name], "napari_sansa": record}
        self._root.attrs.update(root_attrs)  # the record last: the store is complete

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            _remove_tree(self._tmp)

    @classmethod
    def read_record(cls, path) -> dict | None:
        attrs = read_store_attrs(path)
        info = attrs.get("napari_sansa") if attrs else None
        return info if isinstance(info, dict) else None


def _omero(classes) -> dict:
    """``omero`` metadata naming the channels of a probability image by class."""
    channels = []
    for c in classes:
        r, g, b = PALETTE[(int(c) - 1) % len(PALETTE)]
        colour = f"{r:02X}{g:02X}{b:02X}"
        window = {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}
        channels.append({"label": f"class {int(c)}", "color": colour, "window": window})
    return {"channels": channels}


def pixel_sizes(source) -> dict:
    """``{axis: (size, unit)}`` of the space axes of the input ``source`` where its
    metadata says them; ``{}`` when unknown. OME-Zarr and vendor files: the readers'
    :func:`~napari_sansa.dataset.readers.image_info` (sizes in micrometres; an OME-Zarr
    image's other axes, e.g. a time step, keep its level 0 scale); TIFF: its resolution
    tags, ImageJ's unit and Z spacing."""
    if not source:
        return {}
    path = Path(source)
    with contextlib.suppress(Exception):  # metadata that cannot be read: sizes unknown
        from napari_sansa.dataset.readers import format_of, image_info

        kind = format_of(path)
        if kind in ("zarr", "vendor"):
            sizes = image_info(path).pixel_sizes
            space = {a.lower(): (float(v), "micrometer") for a, v in sizes.items()}
            if kind == "vendor":
                return space
            attrs = read_store_attrs(path) or {}
            ms = (attrs.get("ome", attrs).get("multiscales") or [{}])[0]
            return {**_other_scales(ms), **space}
        if kind == "tiff":
            return _tiff_pixel_sizes(path)
    return {}


def _other_scales(ms: dict) -> dict:
    """``{axis: (scale, unit)}`` of level 0 of the NGFF multiscale ``ms`` for its axes
    other than space (e.g. a time step), so that a label added to the image keeps them."""
    from napari_sansa.dataset.readers.omezarr import level0_scale

    axes = ms.get("axes") or []
    names = [a if isinstance(a, str) else a.get("name") for a in axes]
    scale = level0_scale(ms.get("datasets") or [{}], ms, len(names)) or [1.0] * len(names)
    found = {}
    for a, spec, v in zip(names, axes, scale, strict=True):
        if a and a not in "zyx" and a != "c":
            found[a] = (float(v), None if isinstance(spec, str) else spec.get("unit"))
    return found


def _tiff_pixel_sizes(path: Path) -> dict:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        ij = tif.imagej_metadata or {}
        tags = page.tags
        unit = {2: "inch", 3: "centimeter"}.get(int(getattr(page, "resolutionunit", 1) or 1))
        if ij.get("unit") in ("micron", "um", "µm", "\\u00B5m"):
            unit = "micrometer"
        if "XResolution" not in tags or unit is None:
            return {}
        scale = {"inch": 25400.0, "centimeter": 10000.0, "micrometer": 1.0}[unit]
        x = tags["XResolution"].value
        y = tags["YResolution"].value if "YResolution" in tags else x
        sizes = {
            "x": (scale * x[1] / x[0], "micrometer"),
            "y": (scale * y[1] / y[0], "micrometer"),
        }
        if ij.get("spacing") and unit == "micrometer":
            sizes["z"] = (float(ij["spacing"]), "micrometer")
        return sizes


def add_labels(
    store, name: str, labels, classes, record: dict, *, axes: str | None = None, chunk=CHUNK
) -> Path:
    """Add the label image ``labels`` (an ``(..., Y, X)`` array: numpy, zarr, anything
    sliced by bands of rows; ``axes``: its axes, default the image's other than c) to the
    user's OME-Zarr image ``store`` as ``labels/<name>``, never changing what is there:
    refused when a label of that name exists (or the store is no NGFF image); written
    under a temporary name in ``labels/`` and renamed when complete, then ``name`` is
    added to the ``labels`` list (the one attribute changed; every other file stays byte
    for byte). 0.4 stores (zarr v2) get a 0.4 label, 0.5 stores (zarr v3) a 0.5 one.
    Returns the label group's path."""
    import zarr

    store = Path(store)
    attrs = read_store_attrs(store)
    ome = (attrs or {}).get("ome", attrs or {})
    if not ome.get("multiscales"):
        raise InvalidInputError(
            f"{store} is not an OME-Zarr image (no NGFF multiscales metadata): labels are "
            "added only to an OME-Zarr image store"
        )
    v3 = (store / "zarr.json").is_file()
    where = store / "labels"
    existing = read_store_attrs(where) if where.exists() else None
    if where.exists() and existing is None:
        raise InvalidInputError(f"{where} is there but is not a zarr group: nothing was added")
    group_attrs = (existing or {}).get("ome", existing or {})
    final = where / name
    if name in (group_attrs.get("labels") or []) or final.exists() or final.is_symlink():
        raise InvalidInputError(
            f"{store} already has a label named {name!r} ({final}): it is never replaced; "
            "remove it yourself, or write the labels into --out"
        )
    shape = tuple(int(n) for n in labels.shape)
    if axes is None:
        image_axes = [
            a if isinstance(a, str) else a["name"] for a in ome["multiscales"][0].get("axes", [])
        ]
        axes = "".join(a for a in image_axes if a != "c")[-len(shape) :]
    if len(axes) != len(shape):
        raise InvalidInputError(
            f"labels of shape {shape} do not fit the axes {axes!r} of the image {store}"
        )
    fmt = 3 if v3 else 2
    if existing is None:
        group = zarr.open_group(str(where), mode="w-", zarr_format=fmt)
        group.attrs.update(_ngff({"labels": []}, fmt))
    tmp = temporary_path(final)
    try:
        label = zarr.open_group(str(tmp), mode="w-", zarr_format=fmt)
        levels = _Levels(label, shape, np.dtype(labels.dtype), axes, chunk)
        lead, (h, w) = shape[:-2], shape[-2:]
        for index in np.ndindex(*lead):
            for r in range(0, h, chunk):
                band = np.asarray(labels[(*index, slice(r, r + chunk), slice(None))])
                levels.put(index, slice(r, r + band.shape[-2]), slice(0, w), band)
        levels.build()
        sizes = pixel_sizes(store)
        version = None if v3 else NGFF_VERSION
        meta = {"multiscales": [levels.multiscales(name, sizes, version)]}
        meta["image-label"] = _label_metadata(classes, "labels", version, "../../")
        label.attrs.update({**_ngff(meta, fmt), "napari_sansa": record})
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove_tree(tmp)
        raise
    add_label_name(where, name, v3)
    return final


def add_label_name(where: Path, name: str, v3: bool) -> None:
    """Add ``name`` to the ``labels`` list of the group ``where`` (its one changed file,
    replaced atomically; its other keys kept as they are)."""
    meta_file = where / ("zarr.json" if v3 else ".zattrs")
    meta = json.loads(meta_file.read_text("utf-8")) if meta_file.is_file() else {}
    attrs = meta.setdefault("attributes", {}) if v3 else meta
    holder = attrs.setdefault("ome", {"version": "0.5"}) if v3 else attrs
    holder["labels"] = [*holder.get("labels", []), name]
    write_text_atomic(meta_file, json.dumps(meta, indent=2))
