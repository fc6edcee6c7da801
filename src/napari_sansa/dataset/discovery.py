"""Finding the targets of a run: image files and TIFF stacks under the inputs given.

Discovery only lists names: no file is opened (a TIFF is found to be a stack or a
single image when it is processed), and a folder that cannot be listed is reported
(as ``unreadable``) rather than silently skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from napari_sansa.core.errors import InvalidInputError, output_error
from napari_sansa.dataset.io import IMAGE_SUFFIXES, TIFF_SUFFIXES, not_a_regular_file
from napari_sansa.dataset.outputs import WRITER

PROB_SUFFIX = "_probabilities"
OBJECTS_SUFFIX = "_objects"
TRACKS_SUFFIX = "_tracks"
CTC_SUFFIX = "_ctc"


@dataclass(frozen=True)
class Target:
    """One unit of work: an image file, or a TIFF stack labelled as one output stack.

    ``kind`` is "image", "stack", or "tiff" for a TIFF not opened yet (it becomes an
    image or a stack when it is processed); ``frames`` is known for stacks only.
    """

    source: str
    output: str  # relative path of the label image in the output folder
    kind: str = "image"  # "image", "stack", or "tiff" (not opened yet)
    frames: int = 1

    @property
    def prob_output(self) -> str:
        p = Path(self.output)
        return str(p.with_name(p.stem + PROB_SUFFIX + p.suffix))

    @property
    def objects_output(self) -> str:
        """The object label image next to the labels (``--instances``)."""
        p = Path(self.output)
        return str(p.with_name(p.stem + OBJECTS_SUFFIX + p.suffix))

    @property
    def tracks_output(self) -> str:
        """The track label stack next to the labels (``--tracks``)."""
        p = Path(self.output)
        return str(p.with_name(p.stem + TRACKS_SUFFIX + p.suffix))

    @property
    def ctc_output(self) -> str:
        """The folder of the Cell Tracking Challenge result (``--tracks``)."""
        p = Path(self.output)
        return str(p.with_name(p.stem + CTC_SUFFIX))


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _walk(folder: Path, unreadable: list) -> list[Path]:
    """The image files under ``folder`` (hidden entries skipped); a folder that cannot
    be listed goes to ``unreadable`` as ``(path, message)``."""
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
        if is_dir and not e.is_symlink():  # as rglob: linked folders are not followed
            files += _walk(Path(e.path), unreadable)
        elif Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
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


def discover_targets(inputs, out, probabilities: bool = True, *, unreadable=None) -> list[Target]:
    """Targets from files and folders (recursively; hidden files and folders skipped).

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
        if root.is_dir():
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
                raise InvalidInputError(
                    f"no images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
        else:
            if root.suffix.lower() not in IMAGE_SUFFIXES:
                raise InvalidInputError(
                    f"{root} is not an image file napari-sansa reads "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            special = not_a_regular_file(root)
            if special:
                raise InvalidInputError(special)
            found = [(root, Path(root.name))]
        for f, rel in found:
            kind = "tiff" if f.suffix.lower() in TIFF_SUFFIXES else "image"
            targets.append(Target(str(f), str(rel.with_suffix(WRITER.suffix)), kind))
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
