"""A run resumes whichever way the same weights arrive: a loaded SansaModel (what the
widget passes) or its ModelSource (what ``napari-sansa segment`` passes); weights made
or changed in memory (fine-tuned, fresh adapters) never pass for the loaded ones."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tifffile
from dataset_files import read_csv, write_reference, write_targets

from conftest import CONFIG, SIZE
from napari_sansa.core.errors import InvalidInputError

N = 8  # images: a run stopped after the first leaves some unlabelled


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-model")
    write_reference(root)
    write_targets(root / "data", N)
    return root


@pytest.fixture(scope="module")
def ref(root):
    from napari_sansa.dataset import load_reference_pair

    return load_reference_pair(root / "ref.png", root / "ref_labels.png")


@pytest.fixture(scope="module")
def source(weights):
    """The settings the ``model`` fixture was loaded with, as the command line gives them."""
    from napari_sansa.dataset import ModelSource

    sam2, adapters = weights
    return ModelSource(
        config=CONFIG, sam2_checkpoint=str(sam2), adapter_checkpoint=str(adapters),
        device="cpu", image_size=SIZE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def whole(root, ref, model):
    from napari_sansa.dataset import segment_dataset

    segment_dataset(root / "data", [ref], root / "whole", model=model, progress=False)
    return labels(root / "whole")


def labels(out) -> dict:
    return {p.name: tifffile.imread(p) for p in sorted(out.glob("*.tif"))}


def stopped_run(root, ref, out, model, after: int = 1):
    """``segment_dataset`` of ``root/data`` into ``out`` stopped after ``after`` images."""
    from napari_sansa.dataset import segment_dataset

    cancel = threading.Event()
    seen = []

    def on_progress(step):
        seen.append(step)
        if len(seen) >= after:
            cancel.set()

    report = segment_dataset(
        root / "data", [ref], out, model=model, progress=False, on_progress=on_progress,
        cancel=cancel, batch_size=1,
    )  # fmt: skip
    assert report.cancelled and 0 < report.done < N
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}


def test_a_loaded_model_records_the_identity_of_its_settings(model, source):
    assert model.source_identity == source.identity()
    assert model.source_identity is not model.source_identity  # a copy: never changed


@pytest.mark.parametrize("first", ["model", "source"])
def test_a_run_stopped_with_one_form_resumes_with_the_other(
    root, ref, model, source, whole, first, tmp_path
):
    from napari_sansa.dataset import segment_dataset

    forms = {"model": model, "source": source}
    second = "source" if first == "model" else "model"
    out = tmp_path / "out"
    stamps = stopped_run(root, ref, out, forms[first])
    resumed = segment_dataset(root / "data", [ref], out, model=forms[second], progress=False)
    assert resumed.ok and not resumed.cancelled
    assert resumed.skipped == len(stamps) and resumed.done == N - len(stamps)
    # the finished frames were not labelled again, and the whole is the uninterrupted run
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps
    got = labels(out)
    assert got.keys() == whole.keys()
    assert all(np.array_equal(got[k], whole[k]) for k in whole)
    again = segment_dataset(root / "data", [ref], out, model=forms[first], progress=False)
    assert again.done == 0 and again.skipped == N


@pytest.mark.parametrize("kind", ["finetuned", "copy", "fresh"])
def test_weights_changed_in_memory_do_not_resume_a_run_of_the_loaded_model(
    root, ref, model, source, kind, tmp_path
):
    import imageio.v3 as iio

    import napari_sansa as ns
    from napari_sansa.core.models.trainable import trainable_copy, wrap_model
    from napari_sansa.dataset import segment_dataset

    if kind == "finetuned":
        frames = [(iio.imread(root / "ref.png"), iio.imread(root / "ref_labels.png"))] * 2
        tuned = ns.finetune(model, frames, steps=1, batch_size=1, input_size=64, seed=0)
    else:  # what ns.finetune starts from: a copy of the SAM2 (its adapters, or fresh ones)
        tuned = wrap_model(model, trainable_copy(model, fresh=kind == "fresh"))
    assert tuned.source_identity is None
    for name, loaded in (("model", model), ("source", source)):
        out = tmp_path / name
        stamps = stopped_run(root, ref, out, loaded)
        run_file = (out / ".napari-sansa" / "run.json").read_text()
        with pytest.raises(InvalidInputError, match=r"another run \(different model\)"):
            segment_dataset(root / "data", [ref], out, model=tuned, progress=False)
        assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == stamps
        assert (out / ".napari-sansa" / "run.json").read_text() == run_file
        settings = json.loads(run_file)["settings"]
        assert settings["model"] == source.identity()


def test_a_folder_of_a_loaded_model_recorded_in_the_earlier_form_resumes(
    root, ref, model, whole, tmp_path
):
    """Folders labelled with a loaded model before it recorded its files' identity have
    ``{"model": model.identity}`` in their settings: the same model goes on there."""
    import copy

    from napari_sansa.dataset import segment_dataset

    earlier = copy.copy(model)  # the same weights, recorded as runs recorded them before
    earlier._source_identity = None
    out = tmp_path / "out"
    stamps = stopped_run(root, ref, out, earlier)
    recorded = json.loads((out / ".napari-sansa" / "run.json").read_text())
    assert recorded["settings"]["model"] == {"model": model.identity}
    resumed = segment_dataset(root / "data", [ref], out, model=model, progress=False)
    assert resumed.skipped == len(stamps) and resumed.done == N - len(stamps)
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps
    got = labels(out)
    assert all(np.array_equal(got[k], whole[k]) for k in whole) and got.keys() == whole.keys()
    assert json.loads((out / ".napari-sansa" / "run.json").read_text()) == recorded
    rows = read_csv(out / "scores.csv")  # every image, each once, from both runs
    assert sorted(r["output"] for r in rows if r["status"] == "ok") == sorted(whole)


def test_a_model_named_another_way_is_told_by_its_part(root, ref, source, tmp_path):
    """The same files with the config named in one run and not in the other are two
    identities (the command line's runs have always recorded them so): the message says
    which part of the model differs."""
    from dataclasses import replace

    from napari_sansa.dataset import segment_dataset

    out = tmp_path / "out"
    stopped_run(root, ref, out, source)
    unnamed = replace(source, config=None)
    with pytest.raises(InvalidInputError, match=r"another run \(different model \(config\)\)"):
        segment_dataset(root / "data", [ref], out, model=unnamed, progress=False)
    with pytest.raises(InvalidInputError, match=r"different model \(config\), threshold\)"):
        segment_dataset(root / "data", [ref], out, model=unnamed, threshold=0.6, progress=False)
