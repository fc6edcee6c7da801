"""Small files for the dataset tests: a reference with its label image, target folders,
the ``segment`` command line for them, and reading ``scores.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from conftest import cli_model_args, make_image


def write_reference(root: Path, labels_name: str = "ref_labels.png") -> np.ndarray:
    """``root/ref.png`` and its label image (classes 1 and 2); returns the labels."""
    iio.imwrite(root / "ref.png", make_image(0))
    lab = np.zeros((96, 128), np.uint8)
    lab[20:50, 30:80] = 1
    lab[60:85, 10:50] = 2
    iio.imwrite(root / labels_name, lab)
    return lab


def write_targets(folder: Path, n: int, seed: int = 10, name: str = "img{}.png") -> Path:
    """``n`` target images in ``folder`` (created), named by ``name.format(i)``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        iio.imwrite(folder / name.format(i), make_image(seed + i))
    return folder


def segment_args(weights, root: Path, *extra, target=None, out=None) -> list[str]:
    """``segment root/data -r ref.png ref_labels.png --out root/out`` on the tiny weights."""
    return [
        "segment",
        str(target or root / "data"),
        "-r",
        str(root / "ref.png"),
        str(root / "ref_labels.png"),
        "--out",
        str(out or root / "out"),
        *cli_model_args(weights),
        *extra,
    ]


def read_csv(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))
