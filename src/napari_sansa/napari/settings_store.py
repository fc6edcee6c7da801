"""The widget's settings that stay: model and local model files, run options, folders.

napari (0.9) keeps no settings for plugins, so they live in a small JSON file in the
user's configuration folder (``platformdirs.user_config_dir("napari-sansa")``, or the
file named by ``NAPARI_SANSA_SETTINGS``), written atomically (a temporary file
renamed over it) each time a remembered control changes. A file that cannot be read,
is not a JSON object, or holds values the widget cannot take is ignored (each such
value with one warning; nothing crashes), and it is kept before anything overwrites it:
a file that cannot be used at all is renamed to ``widget.json.damaged-<time>``, one
with values the widget cannot take is copied there (its other values are used); the
warning says where. Where it cannot be kept, nothing is saved over it in this session.
"Reset to defaults" puts the controls back as the widget opened without the file, and
removes the file.

No Qt here: the controls are reached by their attribute paths on the widget and read
and written through their ``value``; this module is one of the few that name the run
options.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["ENV_SETTINGS", "FIELDS", "RESET_TIP", "WidgetSettings", "load", "save", "settings_path"]

ENV_SETTINGS = "NAPARI_SANSA_SETTINGS"
FILE_NAME = "widget.json"
VERSION = 1
RESET_TIP = (
    "put every remembered setting (model, model files, mode, threshold, options, folders) "
    "back to its default, and forget the saved ones"
)

#: saved name -> (attribute path on the widget, type); the model's files first
FIELDS: dict[str, tuple[str, type]] = {
    "model": ("model_panel.model", str),
    "config": ("model_panel.config", str),
    "sam2_weights": ("model_panel.sam2_file", Path),
    "adapters": ("model_panel.adapter_file", Path),
    "device": ("model_panel.device", str),
    "model_input": ("model_panel.image_size", int),
    "mode": ("mode", str),
    "threshold": ("threshold", float),
    "resize_first": ("input_size", int),
    "probability_maps": ("probabilities", bool),
    "take": ("take", str),
    "tile_size": ("large.tile_size", int),
    "halo": ("large.halo", int),
    "objects": ("large.instances", bool),
    "min_object_size": ("large.min_size", int),
    "seed_distance": ("large.seed_distance", int),
    "refine_objects": ("large.refine", bool),
    "objects_per_plane": ("large.per_plane", bool),
    "tracks": ("large.tracks", bool),
    "max_move": ("large.max_move", int),
    "follow_with_sam2": ("large.follow", bool),
    "folder_in": ("folder.input_folder", Path),
    "folder_out": ("folder.output_folder", Path),
    "save_to": ("save_folder", Path),
    "save_format": ("save_format", str),
    "tuning_steps": ("training_panel.steps", int),
    "validation_frames": ("training_panel.validation", int),
}
#: fields the environment sets (the model panel reads these variables): it wins
MODEL_ENV = (
    "NAPARI_SANSA_CONFIG",
    "NAPARI_SANSA_SAM2_CHECKPOINT",
    "NAPARI_SANSA_ADAPTER_CHECKPOINT",
)
FROM_ENVIRONMENT = {
    **dict.fromkeys(("model", "config", "sam2_weights", "adapters"), MODEL_ENV),
    "model_input": ("NAPARI_SANSA_IMAGE_SIZE",),
}


def settings_path() -> Path:
    """The settings file: ``$NAPARI_SANSA_SETTINGS``, else ``widget.json`` in the user's
    configuration folder for napari-sansa."""
    env = os.environ.get(ENV_SETTINGS, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_config_dir

        folder = Path(user_config_dir("napari-sansa", appauthor=False))
    except ImportError:  # platformdirs comes with napari; a fallback all the same
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "napari-sansa"
    return folder / FILE_NAME


def keep_damaged(path: Path, move: bool) -> Path:
    """Keep the damaged settings file ``path`` as ``<name>.damaged-<time>`` beside it
    (renamed when ``move``, else copied); returns the new name. Raises OSError."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        kept = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        if not os.path.lexists(kept):
            break
    else:  # pragma: no cover - a thousand in one second
        raise FileExistsError(f"{kept} exists")
    if move:
        os.rename(path, kept)
    else:
        shutil.copyfile(path, kept)
    return kept


def _kept_text(path: Path, move: bool) -> tuple[str, bool]:
    """(what the warning says about keeping ``path``, whether it was kept)."""
    try:
        kept = keep_damaged(path, move)
    except OSError as exc:
        return (
            (
                f"it could not be kept ({exc}), so the settings are not saved over it in this "
                "session: move it away or remove it"
            ),
            False,
        )
    return f"the file was kept as {kept}", True


def load(path: Path | None = None, warn=None, keep: bool = False) -> dict:
    """The saved values (name -> JSON value), or {} when there is no file; a damaged file
    is ignored with a warning (``warn(message)``, by default ``warnings.warn``). With
    ``keep``, a damaged file is first renamed to ``<name>.damaged-<time>`` (the warning
    says so)."""
    return _load(path, warn, keep)[0]


def _load(path, warn, keep: bool) -> tuple[dict, bool]:
    """(the saved values, False when a damaged file could not be kept)."""
    warn = warn or (lambda message: warnings.warn(message, stacklevel=4))
    path = settings_path() if path is None else Path(path)
    if not path.exists():
        return {}, True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = f"could not be read ({exc})"
    else:
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            return {k: v for k, v in data["values"].items() if k in FIELDS}, True
        problem = "is not napari-sansa's"
    said, kept = _kept_text(path, move=True) if keep else ("", True)
    warn(f"napari-sansa: the settings file {path} {problem}; defaults used" +
         (f"; {said}" if said else ""))  # fmt: skip
    return {}, kept


def save(values: dict, path: Path | None = None) -> Path:
    """Write ``values`` atomically (a temporary file in the same folder, renamed)."""
    path = settings_path() if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": VERSION, "values": values}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=".widget-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _control(widget, dotted: str):
    obj = widget
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _to_json(value, kind):
    if value is None:
        return None
    if kind is Path:
        text = str(value).strip()
        return None if text in ("", ".") else text
    return kind(value)


#: (file, mtime, size) of settings files with values the widget could not take, copied
_COPIED: set = set()


class WidgetSettings:
    """Remembers the widget's settings: applies the saved ones when the widget opens,
    saves on each change, ``reset()`` goes back to the defaults."""

    def __init__(self, widget, path: Path | None = None, warn=None):
        from napari.utils.notifications import show_warning

        self.widget = widget
        self.path = path
        self.warn = warn or show_warning
        self._loading = False
        #: why nothing is saved (a damaged file that could not be kept), or None
        self.frozen: str | None = None
        self.defaults = self.values()  # as the widget opened (the environment included)
        values, kept = _load(self.file, self.warn, keep=True)
        if not kept:
            self.frozen = f"the damaged settings file {self.file} is in the way"
        if self.apply(values) and self._copy_once():  # values it could not take
            said, kept = _kept_text(self.file, move=False)
            self.warn(f"napari-sansa: the settings file {self.file} has values that were not "
                      f"used; {said}")  # fmt: skip
            if not kept:
                self.frozen = f"the settings file {self.file} could not be kept"
        for name in FIELDS:
            control = _control(widget, FIELDS[name][0])
            control.changed.connect(self.save)

    def _copy_once(self) -> bool:
        """Whether this file, as it is, was not copied yet in this process (another dock
        opened before anything was saved keeps no second copy)."""
        try:
            st = self.file.stat()
        except OSError:
            return True
        key = (str(self.file.resolve()), st.st_mtime_ns, st.st_size)
        if key in _COPIED:
            return False
        _COPIED.add(key)
        return True

    @property
    def file(self) -> Path:
        return settings_path() if self.path is None else Path(self.path)

    def values(self) -> dict:
        """The remembered controls' values now (name -> JSON value)."""
        out = {}
        for name, (dotted, kind) in FIELDS.items():
            out[name] = _to_json(_control(self.widget, dotted).value, kind)
        return out

    def apply(self, values: dict) -> list[str]:
        """Set the controls from ``values``; returns the names that could not be taken
        (each said in a warning). The model's fields are skipped when the environment
        chooses the model (or its input size)."""
        skipped = []
        self._loading = True
        try:
            for name, value in values.items():
                env = FROM_ENVIRONMENT.get(name, ())
                if name not in FIELDS or any(os.environ.get(v, "").strip() for v in env):
                    continue
                dotted, kind = FIELDS[name]
                control = _control(self.widget, dotted)
                try:
                    self._set(control, value, kind)
                except (TypeError, ValueError) as exc:
                    skipped.append(name)
                    self.warn(f"napari-sansa: the saved {name} {value!r} was not used ({exc})")
        finally:
            self._loading = False
        return skipped

    @staticmethod
    def _set(control, value, kind) -> None:
        if value is None:
            if kind is not Path:
                raise ValueError("empty")
            control.value = None
            return
        if kind is bool and not isinstance(value, bool):
            raise TypeError("not true or false")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError("not a number")
        value = kind(value)
        choices = getattr(control, "choices", None)
        if choices is not None and value not in choices:
            raise ValueError("not one of the choices")
        if kind in (int, float):
            low, high = getattr(control, "min", None), getattr(control, "max", None)
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"outside {low}..{high}")
        control.value = value

    def save(self, *_) -> Path | None:
        """Write the controls' values (not while they are being set from the file)."""
        if self._loading or self.frozen:
            return None
        try:
            return save(self.values(), self.file)
        except OSError as exc:
            self.warn(f"napari-sansa: the settings were not saved to {self.file} ({exc})")
            return None

    def reset(self) -> None:
        """Back to the defaults; the file is removed (nothing is remembered)."""
        self.apply(self.defaults)
        self.frozen = None  # asked for: the file goes, saving starts again
        try:
            self.file.unlink(missing_ok=True)
        except OSError as exc:
            self.warn(f"napari-sansa: the settings file {self.file} was not removed ({exc})")
