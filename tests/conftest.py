"""Shared fixtures: a small SANSA (SAM2 Hiera-tiny at 256 px, 128 px for the fine-tuning
tests) with random weights.

The weights are written in Meta's and the authors' file formats and loaded back
through the real loaders, so every test runs the real architecture and code path.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# precision="auto" is bf16 on CPUs with AMX (core.cpu_bf16); the suite's models and
# comparisons are fp32 on every machine, in this process and in the processes it starts
# (CLI runs, Dask workers): tests of the rule fake the CPU and unset this themselves
os.environ["NAPARI_SANSA_CPU_BF16"] = "0"
# Dask workers' statistical profiler can deadlock a process on Python 3.11 (see
# napari_sansa.dataset.dask_plugins); the tests' in-process workers share this process
# from the cluster's start, before a run turns it off, so it starts off here (and in the
# worker processes, which inherit the environment); test_distributed turns it on to
# check that a run stops it
os.environ["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
try:  # dask may have read the environment already (a plugin imported it)
    import dask

    dask.config.set({"distributed.worker.profile.enabled": False})
except ImportError:
    pass

SIZE = 256  # model input size used by the tests
TRAINING_SIZE = 128  # the fine-tuning tests' (``training_model``): a quarter of the pixels
CONFIG = "sam2_hiera_t"


class Weights(tuple):
    """``(sam2 checkpoint, adapter checkpoint)`` of random weights, and ``size``: the model
    input size they were written for (``load_test_model`` and ``cli_model_args`` use it)."""

    size: int

    def __new__(cls, sam2, adapters, size: int = SIZE):
        self = super().__new__(cls, (sam2, adapters))
        self.size = size
        return self


def _size(weights) -> int:
    return getattr(weights, "size", SIZE)


@pytest.fixture(autouse=True)
def _no_leftover_dask_client_setting():
    """A distributed Client sets ``scheduler: dask.distributed`` for the process and takes it
    back when it closes; one whose scheduler went away (tests of lost clusters) does not
    always, and later tests in the same worker would then compute dask arrays on a cluster
    that is gone. Before each test, such a leftover setting without a client is dropped."""
    import sys

    if "dask" in sys.modules:
        import dask

        if dask.config.get("scheduler", None) == "dask.distributed":
            try:
                from distributed import default_client

                default_client()
            except (ImportError, ValueError):  # no client: the setting is a leftover
                dask.config.config.pop("scheduler", None)
    yield


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    folder = tmp_path_factory.mktemp("weights")
    sam2, adapters = write_random_checkpoints(folder, CONFIG, image_size=SIZE, seed=0)
    return Weights(sam2, adapters, SIZE)


@pytest.fixture(scope="session")
def training_weights(tmp_path_factory):
    """The same random tiny model written for 128 px inputs: the fine-tuning tests check
    what a step, a stop and a resume do, not the model's size, and a training step (the
    encoder's backward pass on every frame of an episode) is about 4x faster at 128 px.
    A module of such tests sets ``weights`` and ``model`` to these (see ``training_model``)."""
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    folder = tmp_path_factory.mktemp("training-weights")
    sam2, adapters = write_random_checkpoints(folder, CONFIG, image_size=TRAINING_SIZE, seed=0)
    return Weights(sam2, adapters, TRAINING_SIZE)


def load_test_model(weights, **options):
    """The random tiny model on the CPU at its weights' size, with ``options``."""
    import napari_sansa as ns

    sam2, adapters = weights
    return ns.load_model(
        config=CONFIG,
        sam2_checkpoint=sam2,
        adapter_checkpoint=adapters,
        device="cpu",
        image_size=_size(weights),
        **options,
    )


@pytest.fixture(scope="session")
def model(weights):
    import torch

    torch.set_num_threads(1)
    return load_test_model(weights)  # the defaults users get: feature and result caches on


@pytest.fixture(scope="session")
def training_model(training_weights):
    """The model of ``training_weights``, as ``model`` is of ``weights``."""
    import torch

    torch.set_num_threads(1)
    return load_test_model(training_weights)


def training_size_fixtures():
    """``weights, model = training_size_fixtures()`` in a module of fine-tuning tests: its
    ``weights`` and ``model`` are then ``training_weights`` and ``training_model`` (128 px),
    for its tests and its fixtures. Module scope: a session fixture of this file that needs
    ``weights`` fails there with ScopeMismatch, instead of keeping a 128 px model for the
    whole session."""

    @pytest.fixture(scope="module", name="weights")
    def weights_128(training_weights):
        return training_weights

    @pytest.fixture(scope="module", name="model")
    def model_128(training_model):
        return training_model

    return weights_128, model_128


@pytest.fixture(scope="session")
def recomputing_model(weights):
    """The same model without the result cache: every call decodes every target again,
    for tests that compare two computations (batching, class grouping, modes)."""
    return load_test_model(weights, result_cache_bytes=0)


def make_image(seed: int, shape=(96, 128), rgb: bool = True) -> np.ndarray:
    """A smooth random uint8 image (blobs and gradients, like a micrograph)."""
    from skimage.filters import gaussian

    r = np.random.default_rng(seed)
    base = r.random((*shape, 3 if rgb else 1))
    img = gaussian(base, sigma=6, channel_axis=-1)
    img = (img - img.min()) / (img.max() - img.min())
    img = (img * 255).astype(np.uint8)
    return img if rgb else img[..., 0]


def cli_model_args(weights) -> list[str]:
    """``napari-sansa segment`` options for the random tiny weights on the CPU, quiet."""
    sam2, adapters = weights
    return [
        "--sam2-checkpoint",
        str(sam2),
        "--adapter-checkpoint",
        str(adapters),
        "--image-size",
        str(_size(weights)),
        "--device",
        "cpu",
        "--quiet",
    ]


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


# -- fine-tuning: scripted held-out measurements and losses


def scripted_validation(monkeypatch, ious, losses=None):
    """Make the held-out measurements return ``ious`` (and ``losses``) in turn."""
    from napari_sansa.core.training import trainer

    losses = list(losses or [1.0] * len(ious))
    ious = list(ious)
    calls = []

    def validate(self):
        calls.append(self.step)
        return losses.pop(0), ious.pop(0)

    monkeypatch.setattr(trainer.Finetuning, "validate", validate)
    return calls


def nan_from(monkeypatch, step):
    """The training loss becomes NaN from training step ``step`` on."""
    import torch

    from napari_sansa.core.training import trainer

    real = trainer.Finetuning._terms

    def terms(self, episode):
        f, d, q = real(self, episode)
        if torch.is_grad_enabled() and self.step + 1 >= step:
            f = f * float("nan")
        return f, d, q

    monkeypatch.setattr(trainer.Finetuning, "_terms", terms)


# ---------------------------------------------------------------------------------------
# napari plugin (widget, layer adapter, writer): fixtures for tests/test_napari_*.py
# ---------------------------------------------------------------------------------------


@pytest.fixture
def sansa_env(monkeypatch, weights, tmp_path):
    """The widget's defaults pointed at the random tiny weights ("custom files", 256 px)."""
    sam2, adapters = weights
    monkeypatch.setenv("NAPARI_SANSA_CONFIG", CONFIG)
    monkeypatch.setenv("NAPARI_SANSA_SAM2_CHECKPOINT", str(sam2))
    monkeypatch.setenv("NAPARI_SANSA_ADAPTER_CHECKPOINT", str(adapters))
    monkeypatch.setenv("NAPARI_SANSA_IMAGE_SIZE", str(_size(weights)))
    monkeypatch.setenv("NAPARI_SANSA_HOME", str(tmp_path / "sansa-home"))
    # the widget's remembered settings: a file of the test's own
    monkeypatch.setenv("NAPARI_SANSA_SETTINGS", str(tmp_path / "settings" / "widget.json"))
    return sam2, adapters


@pytest.fixture(scope="session")
def shared_model_cache():
    """One widget model cache for the GUI tests of a process: loaded by the first run,
    with the caches users get (features and decoded results)."""
    from napari_sansa.core.models.cache import ModelCache

    return ModelCache()


@pytest.fixture
def notifications():
    """Messages of the napari notifications shown during the test, in order."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class _Messages:
        def __call__(self):
            return [str(n.message) for n in notification_manager.records[start:]]

        def severities(self):
            return [str(n.severity) for n in notification_manager.records[start:]]

    return _Messages()


def previews_idle(qtbot, widget, timeout: int = 180_000) -> None:
    """Wait until the widget's live preview has done what its prompt layers asked for: the
    debounce timer has fired, nothing is queued and no preview job runs (a run or a test
    that checks the preview layer or the status must not race it)."""
    from napari_sansa.napari.preview import DEBOUNCE_S

    previews = widget.session.previews
    qtbot.wait(int(DEBOUNCE_S * 1000) + 100)
    qtbot.waitUntil(
        lambda: (
            previews.worker is None
            and not previews._queue
            and not widget.preview_panel._timer.isActive()
        ),
        timeout=timeout,
    )


@pytest.fixture
def make_sansa(make_napari_viewer, sansa_env, shared_model_cache, qtbot):
    """``make_sansa(layers...)`` -> (viewer, widget): a real viewer with the SANSA widget
    docked, set to the CPU and to the process's shared model cache. Afterwards the
    widget's live preview is let finish the job it is computing (its queue dropped), so
    that no preview of this test runs on the shared model during the next one."""
    made = []

    def factory(*layers, share_model: bool = True):
        from napari_sansa.napari._qt.widget import SansaWidget

        viewer = make_napari_viewer()
        for data, kwargs, kind in layers:
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        widget = SansaWidget(viewer)
        viewer.window.add_dock_widget(widget, name="SANSA")
        widget.model_panel.device.value = "cpu"
        if share_model:
            widget.session.models = shared_model_cache
        made.append(widget)
        return viewer, widget

    yield factory
    for widget in made:
        previews = widget.session.previews
        previews.enabled = False
        previews._queue.clear()
        with contextlib.suppress(RuntimeError):  # the test deleted the widget itself
            widget.preview_panel._timer.stop()
        with contextlib.suppress(Exception):  # a worker that never ends: not this test's
            qtbot.waitUntil(lambda p=previews: p.worker is None, timeout=180_000)


@pytest.fixture
def propagations(monkeypatch):
    """Every ``ObjectPropagation`` made while the test runs (following objects with SAM2),
    in order: what it was given and what it counted (``encoded``, ``reused``)."""
    import napari_sansa.core.propagation as propagation

    made = []

    class Recording(propagation.ObjectPropagation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(propagation, "ObjectPropagation", Recording)
    return made
