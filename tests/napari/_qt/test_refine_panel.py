"""The objects panel's "refine with SAM2" checkbox (issue 13)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_refine_checkbox_gives_refined_object_options(qtbot):
    from napari_sansa.napari._qt.objects_panel import TilesObjectsPanel

    panel = TilesObjectsPanel()
    assert panel.refine in panel.widgets
    assert not panel.refine.value and not panel.refine.enabled  # objects are off
    assert panel.settings()["instances"] is None
    panel.instances.value = True
    assert panel.refine.enabled
    assert panel.settings()["instances"].refine is False
    panel.refine.value = True
    opts = panel.settings()["instances"]
    assert opts.refine is True and opts.min_size == panel.min_size.value
