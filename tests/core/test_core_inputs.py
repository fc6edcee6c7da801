"""Prompts, images and settings: what is accepted, and a clear ValueError for the rest."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sansa as ns
from napari_sansa.core.images import to_float_rgb
from napari_sansa.core.preprocess import densify_path, sparse_prompts_to_input


def _ref(image, prompts):
    return ns.Reference(image, prompts)


# -- prompts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ns.Mask(np.zeros((8, 8), bool)), "empty"),
        (lambda: ns.Mask(np.ones((8, 8)), label=0), ">= 1"),
        (lambda: ns.Mask(np.ones((8, 8)), label=-3), ">= 1"),
        (lambda: ns.Mask(np.ones((8, 8)), label=1.5), "integer"),
        # booleans are no class ids, though True == 1
        (lambda: ns.Mask(np.ones((8, 8)), label=True), "boolean True"),
        (lambda: ns.Points([[1, 2]], label=True), "boolean True"),
        (lambda: ns.Box((1, 2, 5, 9), label=np.bool_(True)), "boolean True"),
        (lambda: ns.Scribble([[1, 2], [3, 4]], label=np.True_), "boolean True"),
        (lambda: ns.Mask(np.ones((8, 8)), label=False), "boolean False"),
        (lambda: ns.Mask(np.ones((2, 8, 8))), "2D"),
        (lambda: ns.Points([[1, 2, 3]]), "(N, 2)"),
        (lambda: ns.Points(np.zeros((0, 2))), "(N, 2)"),
        (lambda: ns.Points([[1, np.nan]]), "NaN"),
        (lambda: ns.Points([[1, 2], [3, 4]], positive=[True]), "flags"),
        (lambda: ns.Points([[1, 2]], positive=[False]), "negative"),
        (lambda: ns.Points([[1, 2]], positive=["yes"]), "True/False"),
        (lambda: ns.Box((5, 5, 5, 9)), "degenerate"),
        (lambda: ns.Box((5, 5, 9, 5)), "degenerate"),
        (lambda: ns.Box((1, 2, 3)), "4 numbers"),
        (lambda: ns.Scribble([[np.inf, 1]]), "NaN"),
    ],
)
def test_bad_prompts_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_prompts_copy_their_arrays_and_are_read_only():
    coords = np.array([[10.0, 20.0], [30.0, 40.0]])
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 7
    p = ns.Points(coords, label=2, positive=[1, 0])
    m = ns.Mask(mask, label=3)
    coords[0, 0] = -1
    mask[:] = 0
    assert p.coords[0, 0] == 10.0 and p.positive.tolist() == [True, False]
    assert m.mask.sum() == 4 and m.mask.dtype == bool
    with pytest.raises(ValueError):
        p.coords[0, 0] = 5


def test_box_corners_are_sorted_not_adjusted():
    assert ns.Box((9.5, 7, 1.25, 3)).box == (1.25, 3.0, 9.5, 7.0)


def test_reference_checks(images, disk_mask):
    img = images[0]
    with pytest.raises(ValueError, match="at least one prompt"):
        _ref(img, [])
    with pytest.raises(ValueError, match="has shape"):
        _ref(img, [ns.Mask(np.ones((10, 10)))])
    with pytest.raises(ValueError, match="outside"):
        _ref(img, [ns.Points([[200, 5]])])
    with pytest.raises(ValueError, match="outside"):
        _ref(img, [ns.Box((-5, 0, 10, 10))])
    with pytest.raises(ValueError, match="outside"):
        _ref(img, [ns.Scribble([[5, 5], [5, 129]])])
    with pytest.raises(ValueError, match="both a mask and"):
        _ref(img, [ns.Mask(disk_mask, label=1), ns.Points([[40, 60]], label=1)])
    with pytest.raises(ValueError, match="not a prompt"):
        _ref(img, [np.ones((96, 128))])
    # the image's own extent, napari style (-0.5) and exclusive-end style (H, W), is inside
    r = _ref(img, [ns.Box((-0.5, -0.5, 96, 128), label=2), ns.Mask(disk_mask, label=1)])
    assert r.classes == (1, 2)


# -- images ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((1, 1), np.uint8), "at least 2"),
        (np.zeros((0, 10), np.uint8), "at least 2"),
        (np.zeros((2, 3, 16, 16), np.uint8), "4 dimensions"),
        (np.zeros((3, 16, 16), np.uint8), "channels last"),
        (np.full((16, 16), 7, np.uint8), "constant"),
        (np.full((16, 16), np.nan), "NaN"),
        (np.array([[object()] * 4] * 4), "dtype"),
    ],
)
def test_bad_images_raise_value_error(image, message):
    with pytest.raises(ValueError, match=message):
        to_float_rgb(image)


def test_intensity_rules():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.allclose(to_float_rgb(u8)[..., 0], u8 / 255.0)
    u16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) + 1000) * 10
    out = to_float_rgb(u16)
    assert out.min() == 0.0 and out.max() == 1.0  # min-max per image
    f = np.linspace(0.2, 0.7, 256).reshape(16, 16)
    assert np.allclose(to_float_rgb(f)[..., 0], f)  # floats in [0, 1] as they are
    fr = to_float_rgb(u16, intensity_range=(10500, 12000))
    assert fr.min() == 0.0 and fr.max() == 1.0
    assert np.allclose(fr[..., 0], np.clip((u16.astype(float) - 10500) / 1500, 0, 1), atol=1e-6)
    rgba = np.dstack([np.dstack([u8] * 3), np.full_like(u8, 9)])
    assert np.array_equal(to_float_rgb(rgba), to_float_rgb(np.dstack([u8] * 3)))
    assert np.array_equal(to_float_rgb(u8[..., None]), to_float_rgb(u8))
    with pytest.raises(ValueError, match="low < high"):
        to_float_rgb(u8, intensity_range=(5, 5))


# -- coordinates -----------------------------------------------------------------------
def test_row_col_become_sam_x_y_scaled_to_the_model_grid():
    coords, labels = sparse_prompts_to_input(
        [ns.Points([[10, 30], [20, 40]], positive=[True, False]), ns.Box((5, 6, 50, 60))],
        hw=(100, 200),
        image_size=1024,
    )
    assert np.allclose(coords[0], [30 * 1024 / 200, 10 * 1024 / 100])  # (x, y)
    assert np.allclose(
        coords[2:], [[6 * 1024 / 200, 5 * 1024 / 100], [60 * 1024 / 200, 50 * 1024 / 100]]
    )
    assert labels.tolist() == [1, 0, 2, 3]


def test_scribbles_are_sampled_densely():
    path = np.array([[0.0, 0.0], [0.0, 10.0], [7.0, 10.0]])
    dense = densify_path(path)
    steps = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    assert steps.max() <= 1.0 + 1e-9 and len(dense) == 18
    coords, labels = sparse_prompts_to_input([ns.Scribble(path)], hw=(100, 100), image_size=1000)
    assert len(coords) >= 170 and (labels == 1).all()  # ~1 point per model pixel


# -- settings --------------------------------------------------------------------------
def test_bad_settings(model, images, disk_mask):
    ref = _ref(images[0], [ns.Mask(disk_mask)])
    with pytest.raises(ValueError, match="mode"):
        model.segment([ref], images[1:2], mode="video")
    with pytest.raises(ValueError, match="threshold"):
        model.segment([ref], images[1:2], threshold=1.5)
    with pytest.raises(ValueError, match="input_size"):
        model.segment([ref], images[1:2], input_size=3)
    with pytest.raises(ValueError, match="no references"):
        model.segment([], images[1:2])
    with pytest.raises(ValueError, match="not a napari_sansa.Reference"):
        model.segment([images[0]], images[1:2])
    with pytest.raises(ValueError, match="single image"):
        model.segment([ref], images[1])
    with pytest.raises(ValueError, match="batch_size"):
        model.segment([ref], images[1:2], batch_size=0)


def test_bad_target_is_named(model, images, disk_mask):
    ref = _ref(images[0], [ns.Mask(disk_mask)])
    with pytest.raises(ValueError, match="target 1 .*NaN"):
        model.segment([ref], [images[1], np.full((20, 20), np.nan)])


def test_unknown_config_and_device(monkeypatch):
    import torch

    from napari_sansa.core.models.build import check_config_name
    from napari_sansa.core.models.device import resolve_device

    with pytest.raises(ValueError, match="sam2_hiera_l"):
        check_config_name("sam2_hiera_xl")
    assert check_config_name("configs/sam2/sam2_hiera_b+.yaml") == "sam2_hiera_b+"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError):
        resolve_device("tpu")
    # "auto" prefers CUDA, then Apple's MPS, then the CPU (each simulated here)
    cuda, mps = [True], [True]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda[0])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps[0])
    assert resolve_device("auto").type == "cuda"
    cuda[0] = False
    assert resolve_device("auto").type == "mps" and resolve_device(None).type == "mps"
    mps[0] = False
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS"):
        resolve_device("mps")


# -- class ids ---------------------------------------------------------------------------
@pytest.mark.parametrize("label", [2**64, 2**63, 1e300, 1e30, np.uint64(2**63), 2**32])
def test_class_ids_beyond_the_label_images_are_refused_by_name(label):
    with pytest.raises(ns.InvalidInputError, match=r"at most 4294967295"):
        ns.Mask(np.ones((8, 8), bool), label=label)


def test_one_label_dtype_rule_up_to_uint32():
    from napari_sansa.core.fusion import MAX_LABEL, fuse_labels, label_dtype

    assert [label_dtype(c) for c in (1, 255, 256, 65535, 70000, MAX_LABEL)] == [
        np.uint8,
        np.uint8,
        np.uint16,
        np.uint16,
        np.uint32,
        np.uint32,
    ]
    with pytest.raises(ns.InvalidInputError, match=str(MAX_LABEL + 1)):
        label_dtype(MAX_LABEL + 1)
    p = np.full((2, 2), 0.9, np.float32)
    labels = fuse_labels({70000: p, MAX_LABEL: p * 0.5})
    assert labels.dtype == np.uint32 and (labels == 70000).all()  # not 70000 % 65536
    assert ns.Mask(np.ones((8, 8), bool), label=float(MAX_LABEL)).label == MAX_LABEL
