"""Small files for the dataset tests: a reference with its label image, target folders,
the ``segment`` command line for them, and reading ``scores.csv``."""

from __future__ import annotations

import csv
import errno
import os
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


def make_read_only(monkeypatch, folder: Path) -> None:
    """Creating anything inside ``folder`` raises EACCES from now on (``os.mkdir``, and
    ``os.open`` for writing), as in a read-only folder: provoked in-process, because root
    (as CI runs) ignores the folder's modes."""
    mkdir, open_ = os.mkdir, os.open

    def inside(path):
        return str(Path(path)).startswith(str(folder) + os.sep)

    def no_mkdir(path, *a, **k):
        if inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return mkdir(path, *a, **k)

    def no_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open_(path, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", no_mkdir)
    monkeypatch.setattr(os, "open", no_open)
