"""Named models, where their weights come from, and a download cache that cannot be poisoned.

Weights live in ``<home>/weights/`` where ``<home>`` is ``$NAPARI_SANSA_HOME`` or
the per-user cache directory (``~/.cache/napari-sansa`` on Linux). A download
lands in ``<home>/weights/.partial/`` and becomes the cached file (an atomic
rename) only once it is complete and valid: its SHA-256 where one is known,
otherwise its structure (it loads as a checkpoint of the expected model, or holds
adapter weights of the expected shapes). An interrupted or corrupt download is
deleted and never used; the next call simply tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from napari_sansa.core.errors import CheckpointError, InvalidInputError, ModelNotFoundError

__all__ = [
    "ModelSpec",
    "Source",
    "get_model_spec",
    "list_models",
    "napari_sansa_home",
    "register_model",
    "resolve_files",
    "weights_dir",
]

SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
GDRIVE = "https://drive.google.com/uc?id="


@dataclass(frozen=True)
class Source:
    """One weights file: where to get it and how to recognise it.

    ``kind``: ``"http"`` (plain URL, fetched with pooch) or ``"gdrive"`` (fetched with
    gdown, which handles Google Drive's confirmation pages). ``member``: a regular
    expression picking the file out of a zip archive, for downloads that bundle
    several checkpoints.
    """

    filename: str
    url: str
    kind: str = "http"
    role: str = "sam2"  # "sam2" or "adapter"
    sha256: str | None = None
    size_mb: float | None = None
    member: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: str
    sam2: Source
    adapter: Source | None
    description: str
    prompts: str = "points, boxes, scribbles, masks"
    aliases: tuple[str, ...] = field(default=())


def _sam2(size: str, filename: str, mb: float) -> Source:
    return Source(filename, SAM2_BASE + filename, size_mb=mb)


_SAM2_L = _sam2("l", "sam2_hiera_large.pt", 857)


def _adapter(filename: str, drive_id: str, member: str | None = None) -> Source:
    return Source(filename, GDRIVE + drive_id, kind="gdrive", role="adapter", member=member)


def _builtin_specs() -> list[ModelSpec]:
    specs = [
        ModelSpec(
            "sansa-universal",
            "sam2_hiera_l",
            _SAM2_L,
            _adapter("sansa_universal.pth", "1nPOdRfMfo3MQRSi1qkPEri7Gl6FCEVHe"),
            "SANSA universal promptable model (objects and parts), SAM2 Hiera-Large",
            aliases=("universal",),
        ),
        ModelSpec(
            "sansa-generalist",
            "sam2_hiera_l",
            _SAM2_L,
            _adapter("sansa_generalist.pth", "17PktKkF1wibJeEW5CIxPoL7bjKLevfXW"),
            "SANSA in-context generalist (COCO+ADE20K+LVIS+PACO), mask prompts, Hiera-Large",
            prompts="masks",
            aliases=("generalist",),
        ),
        ModelSpec(
            "sansa-fss1000",
            "sam2_hiera_l",
            _SAM2_L,
            _adapter("sansa_fss1000.pth", "1Y_W3cL-qxK-J5-yCJk1fXBwNwrhod5RS"),
            "SANSA strict few-shot, FSS-1000 split, mask prompts, Hiera-Large",
            prompts="masks",
        ),
    ]
    for fold in range(4):
        specs.append(
            ModelSpec(
                f"sansa-coco20i-fold{fold}",
                "sam2_hiera_l",
                _SAM2_L,
                _adapter(
                    f"sansa_coco20i_fold{fold}.pth",
                    "1nAHFgd9VPMN-XGrG0NEkbzkClddA0Ygf",
                    member=rf"fold_?{fold}\D*\.pth?$",
                ),
                f"SANSA strict few-shot, COCO-20i fold {fold}, mask prompts, Hiera-Large",
                prompts="masks",
            )
        )
    for fold in range(10):
        specs.append(
            ModelSpec(
                f"sansa-lvis92i-fold{fold}",
                "sam2_hiera_l",
                _SAM2_L,
                _adapter(
                    f"sansa_lvis92i_fold{fold}.pth",
                    "1wOaHVd-QaZHVKiNSe2aNSS6el1usxcil",
                    member=rf"fold_?{fold}\D*\.pth?$",
                ),
                f"SANSA strict few-shot, LVIS-92i fold {fold}, mask prompts, Hiera-Large",
                prompts="masks",
            )
        )
    for short, size, fname, mb in (
        ("tiny", "t", "sam2_hiera_tiny.pt", 149),
        ("small", "s", "sam2_hiera_small.pt", 176),
        ("base-plus", "b+", "sam2_hiera_base_plus.pt", 309),
        ("large", "l", "sam2_hiera_large.pt", 857),
    ):
        specs.append(
            ModelSpec(
                f"sam2-{short}",
                f"sam2_hiera_{size}",
                _sam2(size, fname, mb),
                None,
                f"plain SAM2 Hiera-{short} v2.0 without adapters (zero-shot baseline)",
            )
        )
    return specs


_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _builtin_specs()}


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model (e.g. your own adapters on an internal server) to the registry."""
    if spec.name in _REGISTRY and not replace:
        raise InvalidInputError(f"a model named {spec.name!r} is already registered")
    from napari_sansa.core.models.build import check_config_name

    check_config_name(spec.config)
    _REGISTRY[spec.name] = spec


_LOCAL_FILES = (
    "--config, --sam2-checkpoint and --adapter-checkpoint on the command line, config=, "
    "sam2_checkpoint= and adapter_checkpoint= in Python"
)


def get_model_spec(name: str) -> ModelSpec:
    if isinstance(name, str):
        key = name.strip().lower()
        for spec in _REGISTRY.values():
            if key == spec.name or key in spec.aliases:
                return spec
    raise InvalidInputError(
        f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)} (or use local "
        f"files: {_LOCAL_FILES})"
    )


def napari_sansa_home() -> Path:
    env = os.environ.get("NAPARI_SANSA_HOME")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-sansa"))


def weights_dir() -> Path:
    return napari_sansa_home() / "weights"


def cached_path(source: Source) -> Path:
    return weights_dir() / source.filename


def list_models() -> list[dict]:
    """Registered models with their files, approximate sizes and whether they are on disk."""
    out = []
    for spec in _REGISTRY.values():
        files = [s for s in (spec.sam2, spec.adapter) if s is not None]
        out.append(
            {
                "name": spec.name,
                "config": spec.config,
                "description": spec.description,
                "prompts": spec.prompts,
                "size_mb": sum(s.size_mb for s in files if s.size_mb) or None,
                "size_known": all(s.size_mb for s in files),
                "downloaded": all(cached_path(s).is_file() for s in files),
                "files": {s.role: str(cached_path(s)) for s in files},
            }
        )
    return out


def _command(spec: ModelSpec) -> str:
    return f"napari-sansa download {spec.name}"


def resolve_files(
    spec: ModelSpec, download: bool = True, force: bool = False, progress: bool = True
):
    """Paths of a model's weights in the cache, downloading what is missing."""
    paths = []
    for source in (spec.sam2, spec.adapter):
        if source is None:
            paths.append(None)
            continue
        path = cached_path(source)
        if force or not path.is_file():
            if not download:
                raise ModelNotFoundError(_missing_message(spec, source, path, "downloads are off"))
            fetch(spec, source, progress=progress)
        paths.append(path)
    return paths[0], paths[1]


def _missing_message(spec: ModelSpec, source: Source, path: Path, reason: str) -> str:
    return (
        f"the {source.role} weights of {spec.name} are not on disk ({reason}). Get {source.url} "
        f"and put the file at {path}, or run `{_command(spec)}` on a machine with internet "
        f"access (NAPARI_SANSA_HOME moves the cache); local files can also be given directly: "
        f"{_LOCAL_FILES}"
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(source: Source, dest: Path, progress: bool) -> None:
    """Fetch ``source`` into ``dest`` (a fresh name in the staging folder)."""
    if source.kind == "gdrive":
        import gdown

        gdown.download(url=source.url, output=str(dest), quiet=not progress, resume=False)
    elif source.kind == "http":
        import pooch

        pooch.get_logger().setLevel("WARNING")  # it logs every file's hash at INFO
        pooch.retrieve(
            url=source.url,
            known_hash=None,  # verified below, before the file enters the cache
            fname=dest.name,
            path=dest.parent,
            progressbar=progress,
        )
    else:
        raise InvalidInputError(f"unknown download kind {source.kind!r} for {source.filename}")
    if not dest.is_file():
        raise OSError("the download produced no file")


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


def validate_download(spec: ModelSpec, source: Source, path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete, fitting weights file."""
    if source.sha256 is not None:
        got = sha256_of(path)
        if got != source.sha256:
            raise CheckpointError(
                f"{source.filename}: SHA-256 {got} does not match the expected {source.sha256}"
            )
        return
    from napari_sansa.core.models.build import build_sam2
    from napari_sansa.core.models.checkpoints import adapter_layout, check_sam2_state_dict, read_checkpoint

    state = read_checkpoint(path, f"downloaded {source.role} file")
    model = build_sam2(spec.config)
    if source.role == "adapter":
        adapter_layout(state, model, path)
    else:
        check_sam2_state_dict(state, model, path, spec.config)


def fetch(spec: ModelSpec, source: Source, progress: bool = True) -> Path:
    """Download one file of ``spec`` into the cache, atomically, or raise."""
    final = cached_path(source)
    staging = final.parent / ".partial"
    staging.mkdir(parents=True, exist_ok=True)
    for old in staging.iterdir():  # left by a process that was killed mid-download
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 86400:
                old.unlink()
    tmp = staging / f"{source.filename}.{uuid.uuid4().hex}.download"
    picked = tmp.with_suffix(".pick")
    try:
        try:
            _download(source, tmp, progress)
        except Exception as exc:  # noqa: BLE001 - network libraries raise many types
            raise ModelNotFoundError(
                _missing_message(
                    spec, source, final, f"download failed: {type(exc).__name__}: {exc}"
                )
            ) from None
        candidate = tmp
        if _is_plain_archive(tmp):
            _extract_member(tmp, source.member, picked, spec.name)
            candidate = picked
        try:
            validate_download(spec, source, candidate)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the download of {source.url} for {spec.name} is incomplete or not the expected "
                f"file, so it was discarded and the cache is unchanged ({exc}); try again later"
            ) from None
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(candidate, final)
        if progress:
            print(f"napari-sansa: saved {final}", file=sys.stderr)
        return final
    finally:  # the downloaders' own partial files too (gdown keeps one for resuming)
        for p in staging.glob(tmp.name.removesuffix(".download") + "*"):
            p.unlink(missing_ok=True)
