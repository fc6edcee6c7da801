"""Issue 19: one run-options value per layer (``SegmentOptions`` in the core, composed by
``DatasetOptions`` and the widget's ``RunSettings``; ``FinetuneOptions`` for tuning), its
stable record, and errors about options as structured fields worded by each front end."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import napari_sansa as ns
from napari_sansa.core.errors import OptionError, option_flag, output_error
from napari_sansa.core.tiling import TileSpec


def test_segment_options_are_checked_once_and_normalised():
    o = ns.SegmentOptions(tile_size=64, instances=True, intensity_range=[0, 200])
    assert o.halo == 8 and o.tiles == TileSpec(64, 8)  # resolved: tile / 8
    assert o.instances == ns.ObjectOptions() and o.intensity_range == (0, 200)
    assert ns.SegmentOptions(instances=False).instances is None
    assert ns.SegmentOptions.make(o, mode="independent", threshold=0.3).threshold == 0.3
    assert ns.SegmentOptions.make({"threshold": 0.3}) == ns.SegmentOptions(threshold=0.3)
    with pytest.raises(OptionError) as info:
        ns.SegmentOptions(tile_size=64, mode="sequential")
    assert info.value.option == "tile_size" and info.value.value == 64
    with pytest.raises(ns.InvalidInputError, match="options must be a SegmentOptions"):
        ns.SegmentOptions.make(0.5)
    with pytest.raises(TypeError):  # an unknown option: Python's own error
        ns.SegmentOptions.make(treshold=0.5)


def test_record_is_the_form_dataset_runs_always_recorded():
    """The dataset run's record (and so its signature) is the same as before the options
    became one value: folders written before resume."""
    assert ns.SegmentOptions().record() == {
        "mode": "independent", "threshold": 0.5, "input_size": 640, "intensity_range": None,
    }  # fmt: skip
    o = ns.SegmentOptions(tile_size=64, halo=4, instances={"min_size": 3}, intensity_range=(0, 9))
    assert list(o.record()) == [
        "mode", "threshold", "input_size", "intensity_range", "tiles", "instances",
    ]  # fmt: skip
    assert o.record()["tiles"] == [64, 4] and o.record()["intensity_range"] == [0, 9]
    assert "refine" not in o.record()["instances"]
    assert ns.SegmentOptions(instances={"refine": True}).record()["instances"]["refine"] is True


def test_dataset_options_compose_the_core_value():
    from napari_sansa.dataset import DatasetOptions

    d = DatasetOptions.make(mode="sequential", sequential_axis="t", channels="2,0", threshold=0.4)
    assert d.segment == ns.SegmentOptions(mode="sequential", threshold=0.4)
    assert (d.sequential_axis, d.channels) == ("T", (2, 0))
    assert list(d.record())[-2:] == ["channels", "sequential_axis"]
    assert DatasetOptions.make(d, probabilities=True).segment is d.segment
    assert DatasetOptions.make(ns.SegmentOptions(threshold=0.4)).segment.threshold == 0.4
    with pytest.raises(OptionError) as info:
        DatasetOptions.make(sequential_axis="T")  # independent mode
    assert "only when --mode is sequential" in info.value.worded(option_flag)


def test_segment_takes_the_value_and_keywords_alike(model, images, disk_mask):
    ref = ns.Reference(images[0], [ns.Mask(disk_mask)])
    options = ns.SegmentOptions(mode="sequential", threshold=0.4)
    by_value = model.segment([ref], images[1:3], options)
    by_keywords = model.segment([ref], images[1:3], mode="sequential", threshold=0.4)
    for a, b in zip(by_value, by_keywords, strict=True):
        assert np.array_equal(a.logits[1], b.logits[1]) and a.threshold == 0.4
    # a prepared memory: its pre-processing goes on; given otherwise, it is refused
    memory = model.prepare_references([ref], input_size=None)
    assert len(model.segment(memory, images[1:2], threshold=0.4)) == 1
    with pytest.raises(ns.InvalidInputError, match="prepared with input_size=None"):
        model.segment(memory, images[1:2], ns.SegmentOptions())


def test_segment_signature_is_segment_iter_s():
    segment = inspect.signature(ns.SansaModel.segment)
    assert list(segment.parameters) == ["self", "references", "targets", "options", "cancel",
                                        "keywords"]  # fmt: skip


def test_option_errors_are_worded_by_each_front_end():
    exc = OptionError("tile_size", 8, "at least 16 pixels", fix="without {tile_size}: whole")
    assert str(exc) == "tile_size must be at least 16 pixels, got 8: without tile_size: whole"
    assert exc.worded(option_flag).startswith("--tile-size must be at least 16 pixels, got 8")
    back = pickle.loads(pickle.dumps(exc))  # raised on a Dask worker
    assert (back.option, back.value, str(back)) == ("tile_size", 8, str(exc))
    # the output folder: the command line's words by default; a front end without an
    # overwrite option leaves out the clause that names it (a path's own text stays)
    err = output_error("{value} holds [x]: [use {overwrite} to redo, or ]choose another {out}",
                       "/a/{b}")  # fmt: skip
    assert str(err) == "/a/{b} holds [x]: use --overwrite to redo, or choose another --out"
    words = {"out": "output folder", "overwrite": None}.get
    assert err.worded(words) == "/a/{b} holds [x]: choose another output folder"


def test_the_widget_words_option_errors_with_its_controls():
    from napari_sansa.napari.messages import gui_message

    exc = OptionError("tile_size", 8, "larger than 2 x {halo}")
    names = {"tile_size": "'tile size (0: off)'", "halo": "'halo (-1: auto)'"}.get
    short, details = gui_message(exc, names=names)
    assert short == "'tile size (0: off)' must be larger than 2 x 'halo (-1: auto)', got 8"
    assert details == str(exc)
    short, _ = gui_message(output_error("[use {overwrite}, or ]choose another {out}", "x"))
    assert short == "choose another output folder"


def test_the_viewer_s_sequential_axis_is_a_name():
    """Issue 20: "sequential along" took a position number from scripts; it is the axis's
    name, and anything else is refused saying so."""
    from napari_sansa.napari.worker import RunSettings

    assert RunSettings.make(mode="sequential", sequential_axis="z").sequential_axis == "z"
    with pytest.raises(OptionError, match="name of a frame axis"):
        RunSettings.make(mode="sequential", sequential_axis=1)


def test_finetune_options_record_the_state_s_settings():
    """A saved fine-tuning state records the options as it always did (resumable)."""
    from napari_sansa.core.training.options import FinetuneOptions

    o = FinetuneOptions(steps=40, prompt=["box", "point"])
    assert o.validation is None and o.resolved().validation == 0.2
    assert o.record() == {
        "steps": 40, "lr": 1e-4, "shots": 1, "prompt": ["box", "point"], "batch_size": 2,
        "input_size": 640, "validation": 0.2, "validate_every": 2, "seed": 0, "dropout": None,
        "fresh_adapters": False, "stages": [2, 3], "channel_factor": 0.3,
    }  # fmt: skip
    assert FinetuneOptions.make(like=ns.SegmentOptions(input_size=None)).input_size is None
    with pytest.raises(OptionError, match="lr must be > 0"):
        FinetuneOptions(lr=0)


def test_finetune_iter_takes_at_most_twelve_parameters():
    for f in (ns.finetune_iter, ns.SansaModel.segment_iter):
        named = [p for p in inspect.signature(f).parameters.values() if p.kind != p.VAR_KEYWORD]
        assert len(named) <= 12
    from napari_sansa.dataset import segment_dataset

    named = inspect.signature(segment_dataset).parameters.values()
    assert len([p for p in named if p.kind != p.VAR_KEYWORD]) <= 12
