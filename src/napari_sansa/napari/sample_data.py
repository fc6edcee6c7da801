"""Sample data: a small simulated time-lapse made from scikit-image's ``coins`` picture.

Nothing is downloaded: ``coins.png`` ships inside scikit-image. A 256x256 window
moves across the picture over 8 frames (like a drifting stage); frame 0 comes
with a few coins painted as class 1 in a "[sansa references]" Labels layer, and
an empty Points layer is ready for clicks (class and polarity as features).
Open it, press Run in the SANSA widget, and the other 7 frames are labelled.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coins_frames", "coins_reference", "make_sample_data"]

NAME = "coins time-lapse"
N_FRAMES = 8
SIZE = 256


def coins_frames(n_frames: int = N_FRAMES, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The (n, size, size) uint8 stack and the (n, 2) window offsets (row, col)."""
    from skimage import data

    coins = data.coins()  # (303, 384) uint8, shipped with scikit-image
    h, w = coins.shape
    rows = np.rint(np.linspace(0, h - size, n_frames)).astype(int)
    cols = np.rint(np.linspace(0, w - size, n_frames)).astype(int)
    stack = np.stack([coins[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)])
    return stack, np.stack([rows, cols], axis=1)


def _coin_objects(image: np.ndarray) -> np.ndarray:
    """Connected coins of one frame (labelled 1..n), whole ones only."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology, segmentation

    edges = filters.sobel(image)
    markers = np.zeros(image.shape, dtype=np.uint8)
    markers[image < 30] = 1
    markers[image > 150] = 2
    coins = segmentation.watershed(edges, markers) == 2
    coins = ndi.binary_fill_holes(coins)
    coins = morphology.remove_small_objects(coins, max_size=199)
    return measure.label(segmentation.clear_border(coins))


def coins_reference(frame: np.ndarray, n_objects: int = 3) -> np.ndarray:
    """A class-1 mask of the ``n_objects`` largest whole coins of a frame."""
    objects = _coin_objects(frame)
    sizes = np.bincount(objects.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:n_objects]
    keep = keep[sizes[keep] > 0]
    return np.isin(objects, keep).astype(np.uint8)


def make_sample_data():
    """npe2 sample-data command: image stack, references on frame 0, a Points layer."""
    from napari_sansa.napari.geometry import META_KEY
    from napari_sansa.napari.outputs import points_layer_kwargs

    stack, _ = coins_frames()
    labels = np.zeros(stack.shape, dtype=np.uint8)
    labels[0] = coins_reference(stack[0])
    return [
        (stack, {"name": NAME}, "image"),
        (
            labels,
            {
                "name": f"{NAME} [sansa references]",
                "metadata": {META_KEY: "references"},
                "opacity": 0.6,
            },
            "labels",
        ),
        (
            np.empty((0, 3)),
            {
                "name": f"{NAME} [sansa points]",
                "metadata": {META_KEY: "points"},
                **points_layer_kwargs(3),
            },
            "points",
        ),
    ]
