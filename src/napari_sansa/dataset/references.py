"""References from files: image + label image pairs, and JSON prompt files.

The loaders remember which files each reference came from
(:func:`reference_files`), so that a run never writes over a reference's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import image_hw
from napari_sansa.core.jsonfile import JSONTooDeepError, JSONTooLargeError, read_json
from napari_sansa.core.prompts import Box, Mask, Points, Reference, Scribble, check_label
from napari_sansa.dataset.io import read_frame_image, read_label_image

log = logging.getLogger(__name__)

#: more classes than this in one label image gets a warning (each class costs time)
MANY_CLASSES = 100
#: a label image with more classes than this fraction of its pixels (and more than
#: MANY_CLASSES) is refused as "not a label image" unless ``allow_many_classes``
MAX_CLASS_FRACTION = 0.1

#: the largest prompt file read (a prompt file's points, boxes and scribbles take far less;
#: a larger file is refused before it is read into memory)
PROMPT_FILE_BYTES = 64 << 20

_FILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reference_files(references) -> list[Path]:
    """The files the references were loaded from (image, label image, prompt file)."""
    return [p for r in references for p in _FILES.get(r, ())]


def _remember(ref: Reference, *paths) -> Reference:
    _FILES[ref] = tuple(Path(p).expanduser().absolute() for p in paths if p is not None)
    return ref


def _label_masks(labels: np.ndarray, what: str, hw, allow_many_classes=False) -> list[Mask]:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        kind = " (a color image)" if labels.ndim == 3 and labels.shape[-1] in (3, 4) else ""
        raise InvalidInputError(
            f"{what} must be a single-channel label image (0 = background, 1, 2, ... = class "
            f"ids): grayscale or palette PNG, or TIFF; it has shape {labels.shape}{kind}"
        )
    if tuple(labels.shape) != tuple(hw):
        raise InvalidInputError(
            f"{what} is {labels.shape[0]}x{labels.shape[1]} but its image is {hw[0]}x{hw[1]}: "
            "a label image must have its image's size"
        )
    if labels.dtype.kind == "f" and (
        not np.isfinite(labels).all() or not np.equal(np.mod(labels, 1), 0).all()
    ):
        raise InvalidInputError(f"{what} holds non-integer values; class ids must be integers")
    if labels.dtype.kind not in "biuf":
        raise InvalidInputError(f"{what} has dtype {labels.dtype}; use an integer label image")
    classes = [int(c) for c in np.unique(labels) if c != 0]
    _check_class_count(len(classes), labels.size, what, allow_many_classes)
    if not classes:
        raise InvalidInputError(f"{what} is empty (no nonzero pixel): label at least one object")
    if min(classes) < 0:
        raise InvalidInputError(f"{what} holds negative values; class ids are 1, 2, ...")
    return [Mask(labels == c, label=c) for c in classes]


def _check_class_count(n: int, pixels: int, what: str, allow: bool) -> None:
    if n > max(MANY_CLASSES, MAX_CLASS_FRACTION * pixels) and not allow:
        raise InvalidInputError(
            f"{what} holds {n} different values on {pixels} pixels: that is not a label image "
            "(a noisy or continuous image?). A label image holds one value per class (0 = "
            "background, 1, 2, ... = class ids); give the label image, or pass "
            "--allow-many-classes (allow_many_classes=True) if it really has that many classes"
        )
    if n > MANY_CLASSES:
        log.warning(
            "%s holds %d classes (more than %d): every class is segmented separately, which "
            "takes time in proportion",
            what,
            n,
            MANY_CLASSES,
        )


def load_reference_pair(
    image_path, labels_path, *, allow_many_classes=False, axes=None, channels=None, lazy=False
) -> Reference:
    """A reference from an image file and its label image (nonzero value = class id).

    A label image with more than :data:`MANY_CLASSES` classes gets a warning; one with
    more classes than a tenth of its pixels is refused unless ``allow_many_classes``.
    A TIFF image with a channel axis (``axes``, as the targets' ``--axes``) gives the
    frame its ``channels`` make, as the targets' frames are made; it must be one frame.
    ``lazy`` (runs by tiles): a one-page TIFF image is not read but opened as an array
    read window by window (see :func:`~napari_sansa.dataset.io.read_frame_image`), so
    that a tiled run reads only the tiles that carry prompts; the label image is read
    whole (its classes are found in it).
    """
    image = read_frame_image(image_path, axes, channels, lazy=lazy)
    hw = image_hw(image, f"reference image {image_path}")
    labels = read_label_image(labels_path)
    masks = _label_masks(labels, f"the label image {labels_path}", hw, allow_many_classes)
    return _remember(Reference(image, masks), image_path, labels_path)


def load_prompt_file(
    path, *, allow_many_classes=False, axes=None, channels=None, lazy=False
) -> list[Reference]:
    """References with points, boxes, scribbles (and optional label images) from JSON.

    ``{"references": [{"image": "ref.png", "labels": "ref_labels.png",
    "points": [{"row": 10, "col": 20, "label": 1, "positive": true}],
    "boxes": [{"box": [r0, c0, r1, c1], "label": 2}],
    "scribbles": [{"path": [[r, c], ...], "label": 3}]}]}``; paths are relative to the
    JSON file; ``label`` defaults to 1 and ``positive`` to true. Every part is checked:
    an error names the file, the entry (``references[0], points[1]``) and the form
    expected there; unknown keys are refused rather than ignored. Label images follow
    the rule of :func:`load_reference_pair` (``allow_many_classes``), and so do images
    with channels (``axes``, ``channels``) and ``lazy``.
    """
    import numbers

    path = Path(path)
    forms = {
        "points": '{"row": ROW, "col": COL} (optionally "label": 1 and "positive": true)',
        "boxes": '{"box": [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL]} (optionally "label": 1)',
        "scribbles": '{"path": [[ROW, COL], [ROW, COL], ...]} (optionally "label": 1)',
    }
    entry_keys = ("image", "labels", "points", "boxes", "scribbles")
    prompt_keys = {
        "points": ("row", "col", "label", "positive"),
        "boxes": ("box", "label"),
        "scribbles": ("path", "label"),
    }
    see = "see the prompt file format in docs/cli.md"

    def shown(value) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    def check_keys(obj: dict, allowed, where: str) -> None:
        unknown = [k for k in obj if k not in allowed]
        if unknown:
            raise InvalidInputError(
                f"{where} has unknown key(s) {', '.join(map(shown, unknown))}; the keys there "
                f"are {', '.join(map(shown, allowed))} ({see})"
            )

    def number(value, name: str, where: str) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        try:
            ok = ok and bool(np.isfinite(float(value)))
        except OverflowError:
            ok = False
        if not ok:
            raise InvalidInputError(
                f'{where}: "{name}" must be a finite number, got {shown(value)}'
            )
        return float(value)

    def pairs(value, name: str, where: str) -> list:
        ok = isinstance(value, list) and value
        ok = ok and all(isinstance(v, list) and len(v) == 2 for v in value)
        if not ok:
            raise InvalidInputError(
                f'{where}: "{name}" must be a list of [ROW, COL] pairs, e.g. [[20, 100], '
                f"[40, 110]], got {shown(value)}"
            )
        return [[number(r, name, where), number(c, name, where)] for r, c in value]

    def label_of(item: dict, where: str) -> int:
        try:
            return check_label(item.get("label", 1))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None

    def file_name(entry: dict, key: str, where: str, required: bool):
        value = entry.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            what = "reference image" if key == "image" else "label image"
            raise InvalidInputError(
                f'{where}: "{key}" must be the path of the {what} as a string (relative to '
                f'the JSON file), e.g. "{key}": "ref.png"; got {shown(value)}'
            )
        return value

    try:
        data = read_json(path, PROMPT_FILE_BYTES)
    except FileNotFoundError:
        raise InvalidInputError(f"the prompt file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInputError(f"the prompt file {path} is a folder, not a JSON file") from None
    except JSONTooLargeError as exc:
        raise InvalidInputError(
            f"the prompt file {path} is {exc.size} bytes, more than a prompt file holds "
            f"(at most {PROMPT_FILE_BYTES >> 20} MiB): give the JSON prompt file ({see})"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"the prompt file {path} is not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    except JSONTooDeepError:
        raise InvalidInputError(
            f"{path} is nested too deeply to be a prompt file (lists or objects inside each "
            f'other thousands of levels deep); a prompt file is {{"references": [...]}} ({see})'
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("references"), list):
        raise InvalidInputError(
            f'{path} must hold {{"references": [...]}}: an object whose "references" is a '
            f"list of references ({see}); got {shown(data)}"
        )
    check_keys(data, ("references",), path)
    refs = []
    for i, entry in enumerate(data["references"]):
        where = f"{path}, references[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(
                f'{where} must be an object such as {{"image": "ref.png", "points": [...]}}, '
                f"got {shown(entry)}"
            )
        check_keys(entry, entry_keys, where)
        image_name = file_name(entry, "image", where, required=True)
        labels_name = file_name(entry, "labels", where, required=False)
        items = {}
        for kind in ("points", "boxes", "scribbles"):
            value = entry.get(kind)
            if value is None:
                value = []
            if not isinstance(value, list):
                raise InvalidInputError(
                    f'{where}: "{kind}" must be a list of {forms[kind]}, got {shown(value)}'
                )
            for j, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidInputError(
                        f"{where}, {kind}[{j}] must be {forms[kind]}, got {shown(item)}"
                    )
                check_keys(item, prompt_keys[kind], f"{where}, {kind}[{j}]")
            items[kind] = value
        try:
            image = read_frame_image(path.parent / image_name, axes, channels, lazy=lazy)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        hw = image_hw(image, f"reference image {image_name}")
        prompts: list = []
        if labels_name is not None:
            lab = path.parent / labels_name
            prompts += _label_masks(
                read_label_image(lab), f"the label image {lab}", hw, allow_many_classes
            )
        clicks: dict[int, tuple[list, list]] = {}  # clicks of one class form one prompt
        for j, p in enumerate(items["points"]):
            pw = f"{where}, points[{j}]"
            for key in ("row", "col"):
                if key not in p:
                    raise InvalidInputError(f'{pw} lacks "{key}": give {forms["points"]}')
            row, col = number(p["row"], "row", pw), number(p["col"], "col", pw)
            positive = p.get("positive", True)
            if not isinstance(positive, bool):
                raise InvalidInputError(
                    f'{pw}: "positive" must be true or false (without quotes), got '
                    f"{shown(positive)}"
                )
            coords, flags = clicks.setdefault(label_of(p, pw), ([], []))
            coords.append([row, col])
            flags.append(positive)
        try:
            for label, (coords, flags) in clicks.items():
                prompts.append(Points(coords, label=label, positive=flags))
        except InvalidInputError as exc:
            raise InvalidInputError(f'{where}, "points": {exc}') from None
        for j, b in enumerate(items["boxes"]):
            bw = f"{where}, boxes[{j}]"
            box = b.get("box")
            if not isinstance(box, list) or len(box) != 4:
                raise InvalidInputError(
                    f'{bw}: "box" must be 4 numbers [MIN_ROW, MIN_COL, MAX_ROW, MAX_COL], got '
                    f"{shown(box)}"
                )
            corners = tuple(number(v, "box", bw) for v in box)
            try:
                prompts.append(Box(corners, label=label_of(b, bw)))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{bw}: {exc}") from None
        for j, sc in enumerate(items["scribbles"]):
            sw = f"{where}, scribbles[{j}]"
            vertices = pairs(sc.get("path"), "path", sw)
            try:
                prompts.append(Scribble(vertices, label=label_of(sc, sw)))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{sw}: {exc}") from None
        try:
            labels_file = None if labels_name is None else path.parent / labels_name
            refs.append(_remember(Reference(image, prompts), path.parent / image_name, labels_file))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    if not refs:
        raise InvalidInputError(f"{path} lists no references: add at least one ({see})")
    return refs


#: bytes of pixels hashed at a time for an image read window by window
DIGEST_BLOCK = 1 << 24


def _pixel_blocks(image):
    """The image's pixels in C order: the array itself, or for an image read window by
    window (not a numpy array) blocks of rows of about :data:`DIGEST_BLOCK` bytes, so
    that hashing a large reference never holds it whole (the bytes are the same)."""
    if isinstance(image, np.ndarray) or not hasattr(image, "shape"):
        yield np.ascontiguousarray(np.asarray(image))
        return
    shape = tuple(image.shape)
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(image.dtype).itemsize)
    step = max(1, DIGEST_BLOCK // row)
    for r in range(0, shape[0], step):
        block = np.asarray(image[r : r + step])
        yield np.ascontiguousarray(block.astype(block.dtype.newbyteorder("="), copy=False))


def _references_digest(refs: list[Reference]) -> str:
    h = hashlib.sha256()
    for r in refs:
        for block in _pixel_blocks(r.image):
            h.update(block.tobytes())
        h.update(str(np.shape(r.image)).encode())
        for p in r.prompts:
            h.update(type(p).__name__.encode() + str(p.label).encode())
            for arr in (getattr(p, a, None) for a in ("mask", "coords", "positive", "path")):
                if arr is not None:
                    h.update(np.ascontiguousarray(arr).tobytes())
            if isinstance(p, Box):
                h.update(str(p.box).encode())
    return h.hexdigest()
