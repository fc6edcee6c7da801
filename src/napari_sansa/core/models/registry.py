"""Named models, where their weights come from, and a download cache that cannot be poisoned.

Weights live in ``<home>/weights/`` where ``<home>`` is ``$NAPARI_SANSA_HOME`` or
the per-user cache directory (``~/.cache/napari-sansa`` on Linux). Downloading and
checking files is :mod:`napari_sansa.core.models.downloads`: a file enters the cache
only complete and valid, and a cached file that changed afterwards is refused.
"""

from __future__ import annotations

import os
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

#: the terms of Meta's SAM2 checkpoints: Meta's SAM 2 repository states that its model
#: checkpoints are released under the Apache License 2.0 (its LICENSE file)
SAM2_TERMS = "Apache License 2.0 (as Meta's SAM 2 release states for its checkpoints)"
#: the terms of the authors' SANSA adapters: their repository (github.com/ClaudiaCuttano/
#: SANSA, checked at commit 3377265 of 2025-11-15) has no licence file and its README
#: states no terms for the weights it links to
ADAPTER_TERMS = (
    "no licence published (the authors' SANSA repository has no licence file and states "
    "no terms for these weights): ask the authors before any use that needs permission, "
    "such as redistribution or commercial use"
)
#: a file registered without terms (e.g. your own, through register_model)
UNKNOWN_TERMS = "not recorded (registered without terms)"


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
    #: what is known about the terms this file may be used under ("": nothing recorded)
    terms: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: str
    sam2: Source
    adapter: Source | None
    description: str
    prompts: str = "points, boxes, scribbles, masks"
    aliases: tuple[str, ...] = field(default=())

    @property
    def terms(self) -> str:
        """What is known about the terms of use of each of the model's files, in a
        sentence (see docs/models.md, "Terms of use")."""
        parts = []
        for source, what in ((self.sam2, "SAM2 weights"), (self.adapter, "SANSA adapters")):
            if source is not None:
                parts.append(f"{what}: {source.terms or UNKNOWN_TERMS}")
        return "; ".join(parts)


def _sam2(size: str, filename: str, mb: float) -> Source:
    return Source(filename, SAM2_BASE + filename, size_mb=mb, terms=SAM2_TERMS)


_SAM2_L = _sam2("l", "sam2_hiera_large.pt", 857)


def _adapter(filename: str, drive_id: str, member: str | None = None) -> Source:
    return Source(
        filename,
        GDRIVE + drive_id,
        kind="gdrive",
        role="adapter",
        member=member,
        terms=ADAPTER_TERMS,
    )


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


def registered_file_names() -> set[str]:
    """The names of the weights files of every registered model (what downloads write
    into :func:`weights_dir`)."""
    return {
        source.filename
        for spec in _REGISTRY.values()
        for source in (spec.sam2, spec.adapter)
        if source is not None
    }


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
        home = Path(env).expanduser()
        if home.exists() and not home.is_dir():
            raise InvalidInputError(
                f"NAPARI_SANSA_HOME={env} is a file, not a folder: point NAPARI_SANSA_HOME at "
                "a folder for napari-sansa's weights (it is created if missing), or unset it "
                "to use the per-user cache folder"
            )
        return home
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
                "terms": spec.terms,
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
    from napari_sansa.core.models import downloads

    paths = []
    for source in (spec.sam2, spec.adapter):
        if source is None:
            paths.append(None)
            continue
        path = cached_path(source)
        if path.exists() and not path.is_file():
            raise CheckpointError(
                f"the cache path of the {source.role} weights of {spec.name}, {path}, is a "
                f"folder (or another non-file): move or remove it, then run `{_command(spec)}`"
            )
        if force or not path.is_file():
            if not download:
                raise ModelNotFoundError(_missing_message(spec, source, path, "downloads are off"))
            _make_folder(path.parent)
            downloads.fetch(
                spec,
                source,
                path,
                lambda reason, s=source, p=path: _missing_message(spec, s, p, reason),
                progress=progress,
                known=frozenset(registered_file_names()),
            )
        else:
            downloads.check_cached(spec, source, path, _command(spec))
        paths.append(path)
    return paths[0], paths[1]


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"the weights folder {folder} cannot be created ({exc.strerror or exc}): set "
            "NAPARI_SANSA_HOME to a folder you can write (it is created if missing)"
        ) from None


def _missing_message(spec: ModelSpec, source: Source, path: Path, reason: str) -> str:
    return (
        f"the {source.role} weights of {spec.name} are not on disk ({reason}). Get {source.url} "
        f"and put the file at {path}, or run `{_command(spec)}` on a machine with internet "
        f"access (NAPARI_SANSA_HOME moves the cache); local files can also be given directly: "
        f"{_LOCAL_FILES}"
    )
