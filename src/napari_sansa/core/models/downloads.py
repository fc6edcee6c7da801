"""Downloading weights into the cache, and the records that catch later damage.

A download is written to a hidden temporary name in ``<home>/weights/`` and becomes the
cached file (one atomic rename, :func:`napari_sansa.core.atomic.atomic_write`) only once
it is complete and valid: its SHA-256 where one is published, otherwise its structure
(it loads as a finite checkpoint of the expected model, or holds adapter weights of the
expected shapes). An interrupted or corrupt download is deleted and never used.

Every file that enters the cache gets a record next to it, ``<file>.sha256.json``, with
its SHA-256. Later loads compare the file with the record (or with the published hash),
so bytes that change on disk afterwards -- even a few, even finite ones -- are a clear
error naming the command that fetches the file again, never silently other weights.

Both downloaders wait at most ``NAPARI_SANSA_DOWNLOAD_TIMEOUT`` seconds (30 by default)
for the server to connect or to send the next bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from napari_sansa.core.atomic import (
    PARTIAL,
    TEMP_PREFIX,
    atomic_write,
    temporary_path,
    write_text_atomic,
)
from napari_sansa.core.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from napari_sansa.core.jsonfile import read_json
from napari_sansa.core.models.fingerprint import file_fingerprint

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "check_cached",
    "download_timeout",
    "fetch",
    "record_path",
    "sha256_of",
    "validate_download",
]

#: Seconds a download waits for the server to connect or to send more bytes.
DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "NAPARI_SANSA_DOWNLOAD_TIMEOUT"


def download_timeout() -> float:
    """The downloads' timeout in seconds (``$NAPARI_SANSA_DOWNLOAD_TIMEOUT`` or 30)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise InvalidInputError(
            f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set it to e.g. 60, "
            "or unset it for the default of 30"
        )
    return value


def sha256_of(path: Path) -> str:
    """SHA-256 of a file (shared with the model's identity, computed once per version)."""
    return file_fingerprint(path)


def _download(source, dest: Path, progress: bool, timeout: float) -> None:
    """Fetch ``source`` into ``dest`` (a fresh hidden name in the weights folder)."""
    if source.kind == "gdrive":
        import gdown

        # gdown >= 6.3 (the requirement) takes a (connect, read) timeout
        gdown.download(
            url=source.url,
            output=str(dest),
            quiet=not progress,
            resume=False,
            timeout=(timeout, timeout),
        )
    elif source.kind == "http":
        import pooch

        pooch.get_logger().setLevel("WARNING")  # it logs every file's hash at INFO
        pooch.retrieve(
            url=source.url,
            known_hash=None,  # verified below, before the file enters the cache
            fname=dest.name,
            path=dest.parent,
            downloader=pooch.HTTPDownloader(progressbar=progress, timeout=timeout),
        )
    else:
        raise InvalidInputError(f"unknown download kind {source.kind!r} for {source.filename}")
    if not dest.is_file():
        raise OSError("the download produced no file")


def _failure(exc: Exception, timeout: float) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return (
            f"the server sent nothing for {timeout:g} s ({text[:200]}); try again "
            f"later, or allow more time with {TIMEOUT_ENV}=SECONDS"
        )
    return text


def _is_plain_archive(path: Path) -> bool:
    """A zip archive of checkpoints (torch's own files are zips holding ``data.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return not any(n.endswith("data.pkl") for n in zf.namelist())


def _extract_member(archive: Path, pattern: str | None, dest: Path, what: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if re.search(r"\.pth?$", n)]
        if pattern is not None:
            names = [n for n in names if re.search(pattern, Path(n).name)]
        if len(names) != 1:
            raise CheckpointError(
                f"the archive downloaded for {what} holds {len(names)} matching checkpoints "
                f"({', '.join(names[:5]) or 'none'}); expected exactly one"
            )
        with zf.open(names[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)


def validate_download(spec, source, path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete, fitting weights file."""
    if source.sha256 is not None:
        got = sha256_of(path)
        if got != source.sha256:
            raise CheckpointError(
                f"{source.filename}: SHA-256 {got} does not match the expected {source.sha256}"
            )
        return
    from napari_sansa.core.models.build import build_sam2
    from napari_sansa.core.models.checkpoints import (
        adapter_layout,
        check_sam2_state_dict,
        read_checkpoint,
    )

    state = read_checkpoint(path, f"downloaded {source.role} file")
    model = build_sam2(spec.config)
    if source.role == "adapter":
        adapter_layout(state, model, path)
    else:
        check_sam2_state_dict(state, model, path, spec.config)


# -- records of good files -------------------------------------------------------------
def record_path(path: Path) -> Path:
    """Where the SHA-256 record of the cached file ``path`` lives."""
    return path.with_name(path.name + ".sha256.json")


def _write_record(source, path: Path) -> None:
    from napari_sansa import __version__

    record = {
        "file": path.name,
        "url": source.url,
        "sha256": sha256_of(path),
        "size": path.stat().st_size,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "by": f"napari-sansa {__version__}",
    }
    write_text_atomic(record_path(path), json.dumps(record, indent=1) + "\n")


def _recorded_sha256(path: Path) -> str | None:
    try:
        record = read_json(record_path(path))
        value = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record (or an unreadable one): the file is checked again
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None


def check_cached(spec, source, path: Path, command: str) -> None:
    """Raise :class:`CheckpointError` if the cached ``path`` is not the file that was fetched.

    It is compared with the published SHA-256, else with the record written when it
    entered the cache. A file without either (fetched by napari-sansa 0.1, or put there
    by hand) is checked once like a fresh download and then recorded.
    """
    expected = source.sha256
    origin = "the published SHA-256"
    if expected is None:
        expected = _recorded_sha256(path)
        origin = f"the SHA-256 recorded when it was downloaded ({record_path(path)})"
    if expected is None:
        try:
            validate_download(spec, source, path)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the cached {source.role} weights {path} are not a valid file ({exc}); run "
                f"`{command} --force` to fetch them again"
            ) from None
        with contextlib.suppress(OSError):  # a read-only cache still loads
            _write_record(source, path)
        return
    got = sha256_of(path)
    if got != expected:
        raise CheckpointError(
            f"the cached {source.role} weights {path} have changed since they were fetched "
            f"(SHA-256 {got}, expected {expected} from {origin}): the file is damaged. Run "
            f"`{command} --force` to fetch it again (or delete it and run `{command}`)"
        )


# -- fetching -------------------------------------------------------------------------
#: tempfile's names (pooch's and gdown's temporaries): 8 characters of this alphabet
_RANDOM8 = "[a-z0-9_]{8}"
_TOKEN = "[0-9a-f]{32}"
#: the temporaries a download makes in ``<home>/weights/``: ``atomic_write``'s (with the
#: package's mark), the archive it is renamed to, gdown's partial file next to it
_LEFTOVER = re.compile(
    rf"{re.escape(TEMP_PREFIX)}.+\.{_TOKEN}{re.escape(PARTIAL)}(?:\.zip|{_RANDOM8}\.part)?\Z",
    re.DOTALL,
)
#: those of the versions between 0.1 and the mark: the same without it (gdown 5 ended
#: its partial file with "tmp", gdown 6 with ".part"), for the files they downloaded
#: (``{names}``: a registered weights file, or its record): a user's
#: ``.photo.jpg.<32 hex>.partial.zip`` is not one
_LEFTOVER_UNMARKED = rf"\.(?:{{names}})\.{_TOKEN}\.partial(?:\.zip|{_RANDOM8}(?:\.part|tmp))?\Z"
#: those of version 0.1, in its staging folder ``<home>/weights/.partial/``: the download
#: and the checkpoint picked from an archive (``{names}``: a registered weights file),
#: gdown's partial file, pooch's temporary
_LEFTOVER_01 = (
    rf"(?:(?:{{names}})\.{_TOKEN}\.(?:download|pick|download{_RANDOM8}(?:\.part|tmp))"
    rf"|tmp{_RANDOM8})\Z"
)


def _of_downloads(pattern: str, names) -> re.Pattern:
    """``pattern`` for the file names ``names`` (those of the registered weights files)."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(pattern.replace("{names}", alternatives or "(?!)"), re.DOTALL)


#: a temporary is left alone while it may be in use: for a day after its last change
#: (a download in progress changes it at least every timeout)
LEFTOVER_AGE_S = 86400.0


def _clean_leftovers(folder: Path, timeout: float, files=frozenset()) -> None:
    """Remove the temporaries of downloads killed long ago (more than a day, and more than
    the download timeout, since their last change): regular files whose whole name is one
    that a download of napari-sansa makes (without the package's mark: of a registered
    weights file), and nothing else (pooch's ``tmp*`` file of an
    interrupted download directly in the weights folder carries no mark: left alone).
    ``files``: the names of the weights files downloads write there (the registry's)."""
    files = set(files)
    records = {record_path(Path(n)).name for n in files}
    found = [
        (folder, _LEFTOVER),
        (folder, _of_downloads(_LEFTOVER_UNMARKED, files | records)),
        (folder / ".partial", _of_downloads(_LEFTOVER_01, files)),
    ]
    now = time.time()
    for where, pattern in found:
        if where.is_symlink():
            continue  # a link is never followed
        try:
            with os.scandir(where) as entries:
                names = [e.name for e in entries if pattern.match(e.name)]
        except OSError:
            continue  # no such folder
        for name in names:
            path = where / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > max(LEFTOVER_AGE_S, timeout):
                    path.unlink()


def fetch(
    spec, source, final: Path, missing_message, progress: bool = True, known=frozenset()
) -> Path:
    """Download one file of ``spec`` to ``final`` (in the cache), atomically, or raise.

    ``missing_message(reason)`` words the error of a download that failed. ``known``: the
    names of every weights file downloads write into that folder, whose temporaries of
    downloads killed long ago are removed (the registry gives them: this module imports
    no registry).
    """
    timeout = download_timeout()
    _clean_leftovers(final.parent, timeout, known | {final.name})
    token = uuid.uuid4().hex
    record_path(final).unlink(missing_ok=True)  # a record never describes another file
    try:
        with atomic_write(final, token=token) as tmp:
            try:
                _download(source, tmp, progress, timeout)
            except Exception as exc:  # noqa: BLE001 - network libraries raise many types
                raise ModelNotFoundError(
                    missing_message(f"download failed: {_failure(exc, timeout)}")
                ) from None
            if _is_plain_archive(tmp):
                archive = tmp.with_name(tmp.name + ".zip")
                os.replace(tmp, archive)
                _extract_member(archive, source.member, tmp, spec.name)
            try:
                validate_download(spec, source, tmp)
            except CheckpointError as exc:
                raise CheckpointError(
                    f"the download of {source.url} for {spec.name} is incomplete or not the "
                    f"expected file, so it was discarded and the cache is unchanged ({exc}); "
                    "try again later"
                ) from None
    finally:  # the downloaders' own partial files too (gdown keeps one for resuming)
        mine = temporary_path(final, token).name
        for p in final.parent.iterdir():
            if p.name.startswith(mine):
                p.unlink(missing_ok=True)
    _write_record(source, final)
    if progress:
        print(f"napari-sansa: saved {final}", file=sys.stderr)
    return final
