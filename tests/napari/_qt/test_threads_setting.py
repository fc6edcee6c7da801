"""The widget's advanced 'CPU threads' setting reaches the model settings (issue 21)."""

from __future__ import annotations

import torch

from napari_sansa.core import threads as th


def test_threads_setting_reaches_the_model_settings(qtbot):
    from napari_sansa.napari._qt.model_panel import ModelPanel

    panel = ModelPanel()
    assert panel.threads in panel.advanced
    assert panel.threads.native.specialValueText() == "automatic"
    assert panel.settings().threads is None  # 0: automatic
    panel.threads.value = 3
    assert panel.settings().threads == 3


def test_the_widget_run_uses_the_setting(monkeypatch):
    """run_frames' worker context takes the model settings' threads over the cores."""
    from napari_sansa.core.models.settings import ModelSettings
    from napari_sansa.napari import worker

    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(th, "others_busy", lambda wait=None: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []

    def results(plan, model_settings, settings, cache, cancel):
        seen.append(torch.get_num_threads())
        yield "frame"

    monkeypatch.setattr(worker, "_results", results)
    torch.set_num_threads(1)
    list(worker.run_frames(None, ModelSettings(name="x", threads=2), None, None))
    list(worker.run_frames(None, ModelSettings(name="x"), None, None))
    assert seen == [2, 6]  # the setting; automatic: 8 cores, one left to napari, one helper
    assert torch.get_num_threads() == 1
