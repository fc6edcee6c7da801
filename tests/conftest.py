"""Shared fixtures: a small SANSA (SAM2 Hiera-tiny at 256 px) with random weights.

The weights are written in Meta's and the authors' file formats and loaded back
through the real loaders, so every test runs the real architecture and code path.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

SIZE = 256  # model input size used by the tests
CONFIG = "sam2_hiera_t"


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    from napari_sansa.core.random_weights import write_random_checkpoints

    folder = tmp_path_factory.mktemp("weights")
    sam2, adapters = write_random_checkpoints(folder, CONFIG, image_size=SIZE, seed=0)
    return sam2, adapters


@pytest.fixture(scope="session")
def model(weights):
    import torch

    import napari_sansa as ns

    torch.set_num_threads(1)
    sam2, adapters = weights
    return ns.load_model(
        config=CONFIG,
        sam2_checkpoint=sam2,
        adapter_checkpoint=adapters,
        device="cpu",
        image_size=SIZE,
    )


def make_image(seed: int, shape=(96, 128), rgb: bool = True) -> np.ndarray:
    """A smooth random uint8 image (blobs and gradients, like a micrograph)."""
    from skimage.filters import gaussian

    r = np.random.default_rng(seed)
    base = r.random((*shape, 3 if rgb else 1))
    img = gaussian(base, sigma=6, channel_axis=-1)
    img = (img - img.min()) / (img.max() - img.min())
    img = (img * 255).astype(np.uint8)
    return img if rgb else img[..., 0]


@pytest.fixture(scope="session")
def images():
    return [make_image(s) for s in range(6)]


@pytest.fixture(scope="session")
def disk_mask():
    yy, xx = np.mgrid[:96, :128]
    return (yy - 40) ** 2 + (xx - 60) ** 2 < 20**2


@pytest.fixture(scope="session")
def rect_mask():
    m = np.zeros((96, 128), bool)
    m[60:85, 10:50] = True
    return m
