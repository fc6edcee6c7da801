"""References from files: image + label image pairs, and JSON prompt files.

The loaders remember which files each reference came from
(:func:`reference_files`), so that a run never writes over a reference's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import image_hw
from napari_sansa.core.prompts import (
    PROMPT_CLASSES,
    PROMPT_FILE_DOC,
    Mask,
    Reference,
    check_json_keys,
    shown_json,
)
from napari_sansa.dataset.io import read_frame_image, read_label_image

log = logging.getLogger(__name__)

#: more classes than this in one label image gets a warning (each class costs time)
MANY_CLASSES = 100
#: a label image with more classes than this fraction of its pixels (and more than
#: MANY_CLASSES) is refused as "not a label image" unless ``allow_many_classes``
MAX_CLASS_FRACTION = 0.1

#: the largest prompt file read (64 MiB): far more than any set of prompts takes, and it
#: keeps a wrong path (``/dev/zero``, a huge data file) from filling the memory
MAX_PROMPT_FILE_BYTES = 64 * 1024 * 1024
#: the most digits of an integer in a prompt file (Python's own limit on reading one)
MAX_PROMPT_INT_DIGITS = 4300

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


class _LongInteger(Exception):
    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_PROMPT_INT_DIGITS:
        raise _LongInteger(digits)
    return int(text)


def _not_regular(path: Path, mode: int) -> InvalidInputError:
    if stat.S_ISDIR(mode):
        return InvalidInputError(f"the prompt file {path} is a folder, not a JSON file")
    kind = "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
    return InvalidInputError(
        f"the prompt file {path} is {kind}, not a regular file: save the prompts in a JSON "
        "file and give its path"
    )


def _read_prompt_bytes(path: Path) -> bytes:
    """The bytes of a prompt file: a regular file of at most :data:`MAX_PROMPT_FILE_BYTES`.

    Anything else (a pipe, which would block, a device such as ``/dev/zero``, which never
    ends) is refused before it is read; the file opened is checked again (``fstat``), so
    that one swapped in after the first check is refused too, and the read stops at the
    limit whatever the file's size says."""
    limit = MAX_PROMPT_FILE_BYTES
    mib = 1024 * 1024
    shown = f"{limit // mib} MiB" if limit % mib == 0 else f"{limit} bytes"
    too_large = (
        f"the prompt file {path} is larger than {shown}: that is not a "
        "prompt file (a few points, boxes and scribbles take kilobytes); check the path"
    )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InvalidInputError(f"the prompt file {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    # O_NONBLOCK: a pipe put there after the check does not block the open
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if st.st_size > limit:
            raise InvalidInputError(too_large)
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InvalidInputError(too_large)
    return data


def _file_name(value, key: str, where: str, required: bool):
    """A prompt file's image or label image name (``None`` when absent and optional)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "reference image" if key == "image" else "label image"
        raise InvalidInputError(
            f'{where}: "{key}" must be the path of the {what} as a string (relative to '
            f'the JSON file), e.g. "{key}": "ref.png"; got {shown_json(value)}'
        )
    return value


@dataclass(frozen=True)
class _EntryImage:
    """What the prompts of a prompt file's reference entry are read against."""

    folder: Path  # the prompt file's folder: names are relative to it
    hw: tuple[int, int]  # the reference image's (rows, cols)
    allow_many_classes: bool


def _label_image_masks(name, where: str, image: _EntryImage) -> list[Mask]:
    if name is None:
        return []
    lab = image.folder / name
    what = f"the label image {lab}"
    return _label_masks(read_label_image(lab), what, image.hw, image.allow_many_classes)


@dataclass(frozen=True)
class _PromptKey:
    """How a prompt file's reference entry reads one of its prompt keys: ``check`` its form
    (``(value, where) -> value``, before any image is read), then ``read`` the checked
    value into prompts (``(value, where, _EntryImage) -> list``)."""

    check: Callable
    read: Callable


def _sparse_key(kind) -> _PromptKey:
    return _PromptKey(kind.check_json, lambda value, where, _image: kind.from_json(value, where))


#: The prompt keys of a prompt file's reference entry, one per prompt class (its
#: ``json_key``), in the order their prompts are made: "labels" names a label image whose
#: classes become masks; "points", "boxes" and "scribbles" list their class's JSON form.
PROMPT_FILE_KEYS = {
    Mask.json_key: _PromptKey(
        lambda value, where: _file_name(value, "labels", where, required=False),
        _label_image_masks,
    ),
    **{kind.json_key: _sparse_key(kind) for kind in PROMPT_CLASSES if kind.sparse},
}


def _read_prompt_json(path: Path):
    """A prompt file's JSON: ``{"references": [...]}``, read within the file limits."""
    try:
        # utf-8-sig: a BOM (as Windows editors write it) is skipped
        data = json.loads(_read_prompt_bytes(path).decode("utf-8-sig"), parse_int=_parse_int)
    except UnicodeDecodeError:
        raise InvalidInputError(f"the prompt file {path} is not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    except _LongInteger as exc:
        raise InvalidInputError(
            f"{path} holds an integer of {exc.digits} digits; numbers in a prompt file "
            f"(pixel coordinates, class ids) have at most {MAX_PROMPT_INT_DIGITS} digits: "
            "check the file"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            f"{path} is nested too deeply to be a prompt file (lists or objects inside each "
            f'other thousands of levels deep); a prompt file is {{"references": [...]}} '
            f"({PROMPT_FILE_DOC})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("references"), list):
        raise InvalidInputError(
            f'{path} must hold {{"references": [...]}}: an object whose "references" is a '
            f"list of references ({PROMPT_FILE_DOC}); got {shown_json(data)}"
        )
    check_json_keys(data, ("references",), path)
    return data


def _entry_reference(entry, where: str, folder: Path, read_image, allow_many_classes) -> Reference:
    """The reference of one entry of a prompt file's "references" (``read_image(path)``
    reads its image)."""
    if not isinstance(entry, dict):
        raise InvalidInputError(
            f'{where} must be an object such as {{"image": "ref.png", "points": [...]}}, '
            f"got {shown_json(entry)}"
        )
    check_json_keys(entry, ("image", *PROMPT_FILE_KEYS), where)
    image_name = _file_name(entry.get("image"), "image", where, required=True)
    values = {key: how.check(entry.get(key), where) for key, how in PROMPT_FILE_KEYS.items()}
    try:
        image = read_image(folder / image_name)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    hw = image_hw(image, f"reference image {image_name}")
    context = _EntryImage(folder, hw, allow_many_classes)
    prompts = []
    for key, how in PROMPT_FILE_KEYS.items():
        prompts += how.read(values[key], where, context)
    labels_name = values[Mask.json_key]
    labels_file = None if labels_name is None else folder / labels_name
    try:
        return _remember(Reference(image, prompts), folder / image_name, labels_file)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


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
    with channels (``axes``, ``channels``) and ``lazy``. The file must be a regular file
    of at most :data:`MAX_PROMPT_FILE_BYTES` (64 MiB), its integers at most 4300 digits.
    Each prompt key is read by its prompt class (:data:`PROMPT_FILE_KEYS`).
    """
    path = Path(path)
    data = _read_prompt_json(path)
    refs = []

    def read_image(image_path):
        return read_frame_image(image_path, axes, channels, lazy=lazy)

    for i, entry in enumerate(data["references"]):
        where = f"{path}, references[{i}]"
        refs.append(_entry_reference(entry, where, path.parent, read_image, allow_many_classes))
    if not refs:
        raise InvalidInputError(f"{path} lists no references: add at least one ({PROMPT_FILE_DOC})")
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


def references_digest(refs: list[Reference]) -> str:
    h = hashlib.sha256()
    for r in refs:
        for block in _pixel_blocks(r.image):
            h.update(block.tobytes())
        h.update(str(np.shape(r.image)).encode())
        for p in r.prompts:
            h.update(p.fingerprint())
    return h.hexdigest()
