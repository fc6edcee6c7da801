"""The npe2 manifest: valid, and every python_name it names imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

MANIFEST = Path(__file__).parents[2] / "src" / "napari_sansa" / "napari.yaml"


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_names_and_contributions():
    pm = _manifest()
    assert pm.name == "napari-sansa"
    commands = pm.contributions.commands
    assert commands and all(c.id.startswith("napari-sansa.") for c in commands)
    assert [w.display_name for w in pm.contributions.widgets] == ["SANSA"]
    assert [m.command for m in pm.contributions.menus["napari/layers/segment"]] == [
        "napari-sansa.make_widget"
    ]
    assert [s.key for s in pm.contributions.sample_data] == ["coins-timelapse"]
    (writer,) = pm.contributions.writers
    assert writer.layer_types == ["labels"] and writer.filename_extensions == [".tif", ".tiff"]


@pytest.mark.parametrize("command", [c.id for c in _manifest().contributions.commands])
def test_every_python_name_imports(command):
    (cmd,) = [c for c in _manifest().contributions.commands if c.id == command]
    module, _, attr = cmd.python_name.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert callable(obj)


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    out = subprocess.run(
        [*cmd, "validate", "napari-sansa", "--imports"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout
