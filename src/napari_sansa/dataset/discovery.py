"""Finding the targets of a run: image files and TIFF stacks under the inputs given.

Discovery only lists names: no file is opened (a TIFF, OME-Zarr or vendor file is found
to be a stack or a single image when it is processed), and a folder that cannot be
listed is reported (as ``unreadable``) rather than silently skipped. An OME-Zarr image
(a ``*.zarr`` folder, or one holding Zarr metadata) is one target, never walked into;
vendor files (CZI, ND2, LIF, DV) whose bioio plugin is not installed are refused here,
before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError, output_error
from napari_sansa.dataset.io import READ_SUFFIXES, format_of, not_a_regular_file
from napari_sansa.dataset.outputs import WRITER
from napari_sansa.dataset.readers import is_zarr_store
from napari_sansa.dataset.readers.vendor import check_plugins

PROB_SUFFIX = "_probabilities"
OBJECTS_SUFFIX = "_objects"
TRACKS_SUFFIX = "_tracks"
CTC_SUFFIX = "_ctc"


@dataclass(frozen=True)
class Target:
    """One unit of work: an image file, or a TIFF stack labelled as one output stack.

    ``kind`` is "image", "stack", or "tiff" for a file not opened yet that may be a
    stack (a TIFF, an OME-Zarr or a vendor file: it becomes an image or a stack when it
    is processed); ``frames`` is known for stacks only.
    """

    source: str
    output: str  # relative path of the label image in the output folder
    kind: str = "image"  # "image", "stack", or "tiff" (may be a stack, not opened yet)
    frames: int = 1

    @property
    def prob_output(self) -> str:
        return _beside(self.output, PROB_SUFFIX)

    @property
    def objects_output(self) -> str:
        """The object label image next to the labels (``--instances``)."""
        return _beside(self.output, OBJECTS_SUFFIX)

    @property
    def tracks_output(self) -> str:
        """The track label stack next to the labels (``--tracks``)."""
        return _beside(self.output, TRACKS_SUFFIX)

    @property
    def ctc_output(self) -> str:
        """The folder of the Cell Tracking Challenge result (``--tracks``): ``a.tif`` ->
        ``a_ctc``, ``a.ome.zarr`` -> ``a_ctc``."""
        tracks = Path(self.tracks_output)
        name = tracks.name[: -len(_suffix(tracks.name))] if _suffix(tracks.name) else tracks.name
        return str(tracks.with_name(name[: -len(TRACKS_SUFFIX)] + CTC_SUFFIX))


#: suffixes of two parts, kept whole when an output's name gets a suffix before them
_DOUBLE_SUFFIXES = (".ome.zarr",)


def _suffix(name: str) -> str:
    """The suffix of an output's file name (``.tif``, ``.ome.zarr``)."""
    for double in _DOUBLE_SUFFIXES:
        if name.endswith(double) and len(name) > len(double):
            return double
    return Path(name).suffix


def _beside(output: str, tag: str) -> str:
    """The name of an output next to ``output``: ``a.tif`` -> ``a<tag>.tif``,
    ``a.ome.zarr`` -> ``a<tag>.ome.zarr``."""
    p = Path(output)
    for double in _DOUBLE_SUFFIXES:
        if p.name.endswith(double) and len(p.name) > len(double):
            return str(p.with_name(p.name[: -len(double)] + tag + double))
    return str(p.with_name(p.stem + tag + p.suffix))


def output_name(rel: Path, suffix: str) -> str:
    """The output of the input at ``rel`` (relative to its folder) with ``suffix``: an
    OME-TIFF's ``.ome`` is not kept before ``.ome.zarr``."""
    if suffix in _DOUBLE_SUFFIXES and rel.stem.lower().endswith(".ome"):
        rel = rel.with_name(rel.stem[:-4] + rel.suffix)
    return str(rel.with_suffix(suffix))


#: what discovery looks for, in messages
_LOOKED_FOR = ", ".join(sorted(READ_SUFFIXES)) + ", and OME-Zarr folders (.zarr)"


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _walk(folder: Path, unreadable: list) -> list[Path]:
    """The image files under ``folder`` (hidden entries skipped), and its Zarr stores (one
    image each, not walked into); a folder that cannot be listed goes to ``unreadable``
    as ``(path, message)``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        unreadable.append((str(folder), _unlisted(folder, exc)))
        return []
    files = []
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()
            is_file = not is_dir and e.is_file()
        except OSError as exc:
            unreadable.append((e.path, _unlisted(Path(e.path), exc)))
            continue
        if is_dir and is_zarr_store(e.path):  # an OME-Zarr image (linked or not)
            files.append(Path(e.path))
        elif is_dir and not e.is_symlink():  # as rglob: linked folders are not followed
            files += _walk(Path(e.path), unreadable)
        elif Path(e.name).suffix.lower() in READ_SUFFIXES:
            if is_file:
                files.append(Path(e.path))
            elif not is_dir and (special := not_a_regular_file(e.path)):
                unreadable.append((e.path, special))  # a pipe: reading it would wait forever
    return files


def _unlisted(path: Path, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return (
        f"the folder {path} cannot be read ({reason}): its images are not labelled; give "
        "the user running napari-sansa read access to it, or remove it from the input"
    )


def discover_targets(
    inputs, out, probabilities: bool = True, *, unreadable=None, suffix: str | None = None
) -> list[Target]:
    """Targets from files and folders (recursively; hidden files and folders skipped),
    each with its output's name (``suffix``: of the outputs' format, default TIFF's).

    Two targets whose outputs would be the same file are refused (their probability
    files too when ``probabilities``), and so is an output that is an input. Folders
    that cannot be listed are appended to ``unreadable`` as ``(path, message)``; without
    that list, the first one is an error."""
    out = Path(out).expanduser().resolve()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    bad: list = []
    targets: list[Target] = []
    for given in inputs:
        root = Path(given).expanduser()
        if not root.exists():
            raise InvalidInputError(f"{root} does not exist")
        root = root.resolve()
        if root.is_dir() and not is_zarr_store(root):
            if _inside(out, root):
                raise output_error(
                    f"the output folder {out} is inside the input folder {root}: outputs would "
                    "be read as inputs on the next run; choose an {out} outside it",
                    out,
                )
            before = len(bad)
            files = _walk(root, bad)
            found = [(f, f.relative_to(root)) for f in sorted(files, key=natural_key)]
            if not found and len(bad) == before:
                raise InvalidInputError(f"no images found in {root} (looked for {_LOOKED_FOR})")
        elif is_zarr_store(root):
            found = [(root, Path(root.name))]
        else:
            if root.suffix.lower() not in READ_SUFFIXES:
                raise InvalidInputError(
                    f"{root} is not an image file napari-sansa reads ({_LOOKED_FOR})"
                )
            special = not_a_regular_file(root)
            if special:
                raise InvalidInputError(special)
            found = [(root, Path(root.name))]
        for f, rel in found:
            kind = "image" if format_of(f) == "image" else "tiff"  # may be a stack
            targets.append(Target(str(f), output_name(rel, suffix or WRITER.suffix), kind))
    check_plugins(t.source for t in targets)  # a vendor file without its plugin: exit 2
    if bad and unreadable is None:
        raise InvalidInputError(bad[0][1])
    if unreadable is not None:
        unreadable.extend(bad)
    seen: dict[str, str] = {}
    for t in targets:
        for o in (t.output, t.prob_output) if probabilities else (t.output,):
            if o in seen and seen[o] != t.source:
                raise output_error(
                    f"{seen[o]} and {t.source} would both be written to {out / o}; rename one "
                    "of them, or segment them in separate runs, each into its own {out}",
                    out,
                )
            seen[o] = t.source
    _check_outputs_are_not_inputs(targets, out)
    return targets


def _check_outputs_are_not_inputs(targets, out: Path) -> None:
    """Refuse outputs that would replace one of the input images (same path or same file)."""
    by_path: dict[str, str] = {}
    by_id: dict[tuple, str] = {}
    for t in targets:
        src = Path(t.source)
        by_path[str(src.resolve())] = t.source
        with contextlib.suppress(OSError):
            st = src.stat()
            by_id[(st.st_dev, st.st_ino)] = t.source
    for t in targets:
        for o in (t.output, t.prob_output):
            path = out / o
            hit = by_path.get(str(path.resolve()))
            if hit is None:
                with contextlib.suppress(OSError):
                    st = path.stat()
                    hit = by_id.get((st.st_dev, st.st_ino))
            if hit is not None:
                what = "that image itself" if hit == t.source else f"the input image {hit}"
                raise output_error(
                    f"the output {path} of {t.source} would replace {what}: choose another "
                    "{out}, a folder that holds none of the input images",
                    out,
                )
