"""Import layering: light top-level package, core without napari/Qt, never torchvision."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_top_level_import_is_light():
    out = _run(
        """
        import sys, napari_sansa
        print(sorted(m for m in ("torch", "napari", "qtpy", "sam2") if m in sys.modules))
        """
    )
    assert out == "[]"


def test_core_runs_without_napari_qt_or_torchvision(weights):
    sam2, adapters = weights
    out = _run(
        f"""
        import sys
        import numpy as np
        import napari_sansa as ns
        m = ns.load_model(config="sam2_hiera_t", sam2_checkpoint={str(sam2)!r},
                          adapter_checkpoint={str(adapters)!r}, device="cpu", image_size=256)
        img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
        mask = np.zeros((64, 64), bool); mask[10:30, 10:30] = True
        m.segment([ns.Reference(img, [ns.Mask(mask)])], [img])
        print(sorted(x for x in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide6", "magicgui",
                                 "torchvision") if x in sys.modules))
        """
    )
    assert out == "[]"
