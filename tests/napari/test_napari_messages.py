"""Errors in GUI terms, on a real viewer (Xvfb): offline or missing weights, config hints."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image

pytestmark = pytest.mark.gui

TIMEOUT = 180_000
DNS = (
    "HTTPSConnectionPool(host='dl.fbaipublicfiles.com', port=443): Max retries exceeded with "
    'url: /segment_anything_2/sam2_hiera_tiny.pt (Caused by NameResolutionError("<urllib3.'
    "connection.HTTPSConnection object at 0x7f>: Failed to resolve 'dl.fbaipublicfiles.com'\"))"
)


def test_offline_weights_name_the_file_and_the_custom_files_choice_and_leave_no_layer(
    make_sansa, qtbot, notifications, tmp_path, monkeypatch
):
    from napari_sansa.core.models import downloads

    monkeypatch.setenv("NAPARI_SANSA_HOME", str(tmp_path / "home"))

    def offline(source, dest, progress, *args, **kwargs):
        raise OSError(DNS)

    monkeypatch.setattr(downloads, "_download", offline)
    stack = np.stack([make_image(i, (40, 48), rgb=False) for i in range(3)])
    viewer, widget = make_sansa(
        (stack, {"name": "cells"}, "image"),
        (np.zeros(stack.shape, np.uint8), {"name": "paint"}, "labels"),
        share_model=False,
    )
    viewer.layers["paint"].data[0, 5:20, 5:30] = 1
    widget.prompt_layers.value = [viewer.layers["paint"]]
    widget.model_panel.model.value = "sam2-tiny"
    names = [layer.name for layer in viewer.layers]
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    errors = [
        m for m, s in zip(notifications(), notifications.severities(), strict=True) if s == "error"
    ]
    assert len(errors) == 1
    message = errors[0]
    assert "sam2_hiera_tiny.pt" in message and str(tmp_path / "home") in message
    assert "'custom files' under Model" in message
    assert "HTTPSConnectionPool" not in message and "--sam2-checkpoint" not in message
    assert widget.status.value == message
    assert "HTTPSConnectionPool" in widget.status.tooltip  # the details, on demand
    assert [layer.name for layer in viewer.layers] == names  # no output layer left
    assert widget.run_button.enabled


def test_a_config_hint_speaks_of_the_widget():
    from napari_sansa.core.errors import CheckpointError
    from napari_sansa.napari.messages import gui_message

    short, details = gui_message(
        CheckpointError(
            "w.pt holds SAM2 weights for sam2_hiera_t, but the model is "
            "sam2_hiera_l: use config='sam2_hiera_t' or the sam2_hiera_l checkpoint"
        )
    )
    assert "choose 'sam2_hiera_t' under 'config' (custom files)" in short
    assert "config=" not in short and "config='sam2_hiera_t'" in details


def test_a_0_255_mask_is_said_to_give_class_255(make_sansa, qtbot, notifications):
    stack = np.stack([make_image(i, (40, 48), rgb=False) for i in range(2)])
    mask = np.zeros(stack.shape, np.uint8)
    mask[0, 5:20, 5:30] = 255
    viewer, widget = make_sansa(
        (stack, {"name": "cells"}, "image"), (mask, {"name": "mask"}, "labels")
    )
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert any("class 255" in m and "0/255 mask" in m for m in notifications())
    assert set(np.unique(viewer.layers["cells [sansa]"].data)) <= {0, 255}
