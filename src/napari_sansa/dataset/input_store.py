"""``--into-input-store``: a target's labels also added to its own OME-Zarr image store.

Only when asked (``into_input_store=True``, with ``format="ome-zarr"``). The labels are
written into ``--out`` as always (the run's record, resume and ``scores.csv`` work as for
every run); once a target's labels store there is complete, its full resolution is
added to the target's store as ``labels/sansa`` (:func:`~napari_sansa.dataset.outputs.
omezarr.add_labels`): a new group written under a temporary name and renamed, then its
name appended to the ``labels`` list. Nothing else of the user's store is changed.

Before anything is loaded (:func:`check_input_stores`) every target must be an OME-Zarr
image store that can be written and has no label named ``sansa`` but one napari-sansa
added for this very run (a rerun then skips it).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from napari_sansa.core.atomic import TEMPORARY_NAME
from napari_sansa.core.errors import InvalidInputError
from napari_sansa.dataset.outputs.omezarr import LABEL_NAME, read_store_attrs

__all__ = ["add_to_input_store", "check_input_stores", "in_input_store"]


def _label_path(source) -> Path:
    return Path(source) / "labels" / LABEL_NAME


def _listed(source) -> bool:
    attrs = read_store_attrs(Path(source) / "labels") or {}
    return LABEL_NAME in (attrs.get("ome", attrs).get("labels") or [])


def in_input_store(t, signature: str) -> bool:
    """Whether ``t``'s store holds the labels napari-sansa added for the run ``signature``."""
    attrs = read_store_attrs(_label_path(t.source)) or {}
    info = attrs.get("napari_sansa")
    ok = isinstance(info, dict) and info.get("run") == signature
    return ok and _listed(t.source)


def check_input_stores(targets, signature: str) -> None:
    """Refuse, before anything is loaded, a target that is not an OME-Zarr image store, a
    store that cannot be written, or one with a label named ``sansa`` that is not the one
    napari-sansa added for this run."""
    for t in targets:
        store = Path(t.source)
        attrs = read_store_attrs(store) if store.is_dir() else None
        if not (attrs or {}).get("ome", attrs or {}).get("multiscales"):
            raise InvalidInputError(
                f"--into-input-store adds the labels to each target's own OME-Zarr image "
                f"store, and {store} is not one: label it into --out alone (leave out "
                "--into-input-store), or give OME-Zarr images only"
            )
        label = _label_path(store)
        if label.exists() or label.is_symlink():
            info = (read_store_attrs(label) or {}).get("napari_sansa")
            if not (isinstance(info, dict) and info.get("run") == signature):
                raise InvalidInputError(
                    f"{store} already has a label named {LABEL_NAME!r} ({label}) that is not "
                    "this run's: it is never replaced. Remove it yourself, or leave out "
                    "--into-input-store (the labels go into --out)"
                )
        _check_writable(store)


def _check_writable(store: Path) -> None:
    import os
    import tempfile

    folder = store / "labels" if (store / "labels").is_dir() else store
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-sansa-probe.", dir=folder)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write into {folder} ({exc.strerror or type(exc).__name__}), so the labels "
            "cannot be added to that image store: make it writable, or leave out "
            "--into-input-store (the labels go into --out)"
        ) from None
    os.close(fd)
    os.unlink(probe)


def add_to_input_store(t, final: Path, record: dict) -> None:
    """Add the labels of ``t`` (its complete store ``final`` in ``--out``) to ``t``'s own
    store; a label napari-sansa added there for this run is kept (only its name is listed
    if an interruption left it unlisted)."""
    import zarr

    from napari_sansa.dataset.outputs.omezarr import add_label_name, add_labels

    store = Path(t.source)
    label = _label_path(store)
    for leftover in (store / "labels").glob(f".napari-sansa-tmp.{LABEL_NAME}.*"):
        m = TEMPORARY_NAME.match(leftover.name)
        if m and m.group("final") == LABEL_NAME and not leftover.is_symlink():
            with contextlib.suppress(OSError):
                shutil.rmtree(leftover)
    if label.is_dir():
        info = (read_store_attrs(label) or {}).get("napari_sansa") or {}
        if info.get("run") == record.get("run") and info.get("source") == record.get("source"):
            if not _listed(store):
                add_label_name(store / "labels", LABEL_NAME, (store / "zarr.json").is_file())
            return
    level0 = zarr.open_array(str(Path(final) / LABEL_NAME / "0"), mode="r")
    attrs = read_store_attrs(Path(final) / LABEL_NAME) or {}
    axes = [a["name"] for a in attrs["multiscales"][0]["axes"]]
    add_labels(store, LABEL_NAME, level0, record.get("classes"), record, axes="".join(axes))
