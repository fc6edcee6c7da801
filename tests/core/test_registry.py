"""Registry and downloads, against a local HTTP server on loopback (no test reaches outside)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile

import numpy as np
import pytest

import napari_sansa as ns
from napari_sansa.cli import main
from napari_sansa.core.models import registry
from napari_sansa.core.models.registry import ModelSpec, Source


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    mode: dict = {}  # path -> "ok" | "truncate" | "corrupt" | "silent" | "stall"
    hits: list = []
    release = threading.Event()  # set at the end of a test: stalled answers end

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        mode = self.mode.get(self.path, "ok")
        if mode == "silent":  # a server that never answers
            self.release.wait(60)
            return
        if mode == "corrupt":
            body = np.random.default_rng(0).bytes(len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("truncate", "stall"):
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            if mode == "stall":  # starts, then sends nothing more
                self.release.wait(60)
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(weights):
    sam2, adapters = weights
    _Files.files = {"/sam2.pt": sam2.read_bytes(), "/adapters.pth": adapters.read_bytes()}
    _Files.mode = {}
    _Files.hits = []
    _Files.release = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Files
    _Files.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SANSA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def spec(server):
    base, _ = server
    s = ModelSpec(
        "test-tiny",
        "sam2_hiera_t",
        Source("test_sam2.pt", f"{base}/sam2.pt"),
        # the authors' adapters live on Google Drive: exercise the gdown path on loopback
        Source("test_adapters.pth", f"{base}/adapters.pth", kind="gdrive", role="adapter"),
        "a random-weight tiny model served on loopback",
    )
    registry.register_model(s)
    yield s
    registry._REGISTRY.pop(s.name, None)


def _cache_files(home):
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())


def test_registry_lists_the_published_models(home):
    names = {m["name"] for m in ns.list_models()}
    assert {
        "sansa-universal",
        "sansa-generalist",
        "sansa-fss1000",
        "sam2-tiny",
        "sam2-large",
    } <= names
    assert {f"sansa-coco20i-fold{i}" for i in range(4)} <= names
    assert {f"sansa-lvis92i-fold{i}" for i in range(10)} <= names
    uni = registry.get_model_spec("sansa-universal")
    assert uni.config == "sam2_hiera_l" and "1nPOdRfMfo3MQRSi1qkPEri7Gl6FCEVHe" in uni.adapter.url
    assert uni.sam2.url.endswith("/072824/sam2_hiera_large.pt")
    assert not any(m["downloaded"] for m in ns.list_models())
    with pytest.raises(ValueError, match="unknown model"):
        registry.get_model_spec("sansa-huge")


def test_every_model_names_the_terms_of_each_of_its_files(home, capsys):
    """docs/models.md, 'Terms of use': SAM2's checkpoints are Apache 2.0, the authors'
    adapters have no published licence; each listing (API, CLI, widget) says so."""
    from napari_sansa.napari._qt.model_panel import model_description

    models = ns.list_models()
    assert models
    for m in models:
        spec = registry.get_model_spec(m["name"])
        assert m["terms"] == spec.terms
        assert m["terms"].startswith("SAM2 weights: Apache License 2.0")
        if spec.adapter is None:
            assert "SANSA adapters" not in m["terms"]
        else:
            assert "SANSA adapters: no licence published" in m["terms"]
            assert "ask the authors" in m["terms"]
        assert f"Terms: {m['terms']}" in model_description(m["name"])
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "terms of use" in out and registry.ADAPTER_TERMS in out
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(m["terms"] for m in listed)
    # a model registered without terms says that nothing is recorded
    own = ModelSpec("own", "sam2_hiera_t", Source("a.pt", "https://x/a.pt"), None, "mine")
    assert own.terms == f"SAM2 weights: {registry.UNKNOWN_TERMS}"


def test_offline_error_names_url_path_and_command(home, spec):
    with pytest.raises(ns.ModelNotFoundError) as info:
        ns.load_model("test-tiny", download=False)
    text = str(info.value)
    assert spec.sam2.url in text
    assert str(home / "weights" / "test_sam2.pt") in text
    assert "napari-sansa download test-tiny" in text


def test_download_then_load(home, spec, weights, server, images, disk_mask, capsys):
    assert main(["download", "test-tiny"]) == 0
    assert _cache_files(home) == [
        "weights/test_adapters.pth",
        "weights/test_adapters.pth.sha256.json",
        "weights/test_sam2.pt",
        "weights/test_sam2.pt.sha256.json",
    ]
    listed = {m["name"]: m for m in ns.list_models()}
    assert listed["test-tiny"]["downloaded"]
    assert main(["models"]) == 0
    assert "test-tiny" in capsys.readouterr().out
    by_name = ns.load_model("test-tiny", device="cpu", image_size=256)
    by_file = ns.load_model(
        config="sam2_hiera_t",
        sam2_checkpoint=weights[0],
        adapter_checkpoint=weights[1],
        device="cpu",
        image_size=256,
    )
    ref = [ns.Reference(images[0], [ns.Mask(disk_mask)])]
    a = by_name.segment(ref, images[1:2])[0].logits[1]
    b = by_file.segment(ref, images[1:2])[0].logits[1]
    assert np.array_equal(a, b)
    hits = len(server[1].hits)
    ns.load_model("test-tiny", device="cpu", image_size=256)  # cached: nothing fetched again
    assert len(server[1].hits) == hits


@pytest.mark.parametrize("path", ["/sam2.pt", "/adapters.pth"])
def test_interrupted_download_never_poisons_the_cache(home, spec, server, path):
    _, files = server
    files.mode[path] = "truncate"
    with pytest.raises(ns.ModelNotFoundError, match="download failed"):
        registry.resolve_files(spec, progress=False)
    cached = _cache_files(home)
    assert f"weights/test_{'sam2.pt' if path == '/sam2.pt' else 'adapters.pth'}" not in cached
    assert not [p for p in cached if ".partial" in p]
    files.mode[path] = "ok"  # a later call retries and succeeds
    sam2, adapters = registry.resolve_files(spec, progress=False)
    assert sam2.is_file() and adapters.is_file()


@pytest.mark.parametrize("path", ["/sam2.pt", "/adapters.pth"])
def test_corrupt_download_is_discarded(home, spec, server, path):
    _, files = server
    files.mode[path] = "corrupt"
    with pytest.raises(ns.CheckpointError, match="discarded"):
        registry.resolve_files(spec, progress=False)
    assert all(
        ".partial" in p or p.endswith(("sam2.pt", "adapters.pth", ".sha256.json"))
        for p in _cache_files(home)
    )
    name = "test_sam2.pt" if path == "/sam2.pt" else "test_adapters.pth"
    assert not (home / "weights" / name).exists()
    assert not [p for p in _cache_files(home) if ".partial" in p]


def test_known_hash_is_checked(home, server):
    base, files = server
    good = hashlib.sha256(files.files["/sam2.pt"]).hexdigest()
    bad = ModelSpec(
        "h-bad", "sam2_hiera_t", Source("h.pt", f"{base}/sam2.pt", sha256="0" * 64), None, ""
    )
    ok = ModelSpec("h-ok", "sam2_hiera_t", Source("h.pt", f"{base}/sam2.pt", sha256=good), None, "")
    with pytest.raises(ns.CheckpointError, match="SHA-256"):
        registry.resolve_files(bad, progress=False)
    assert not (home / "weights" / "h.pt").exists()
    assert registry.resolve_files(ok, progress=False)[0].is_file()


def test_fold_archives_yield_the_chosen_fold(home, server, weights):
    base, files = server
    adapters = weights[1].read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("coco/adapter_coco_fold0.pth", b"not this one")
        zf.writestr("coco/adapter_coco_fold1.pth", adapters)
    files.files["/folds.zip"] = buf.getvalue()
    s = ModelSpec(
        "fold-test",
        "sam2_hiera_t",
        Source("f_sam2.pt", f"{base}/sam2.pt"),
        Source(
            "f_fold1.pth",
            f"{base}/folds.zip",
            kind="gdrive",
            role="adapter",
            member=r"fold_?1\D*\.pth?$",
        ),
        "",
    )
    _, got = registry.resolve_files(s, progress=False)
    assert got.read_bytes() == adapters


def test_download_of_unknown_name_fetches_nothing(home, spec, server, capsys):
    assert main(["download", "test-tiny", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert server[1].hits == []


# -- timeouts, odd cache paths, damage after the download ------------------------------------
@pytest.mark.parametrize("kind", ["http", "gdrive"])
@pytest.mark.parametrize("mode", ["silent", "stall"])
def test_a_server_that_stops_answering_times_out(home, server, monkeypatch, kind, mode):
    base, files = server
    files.mode["/sam2.pt"] = mode
    monkeypatch.setenv("NAPARI_SANSA_DOWNLOAD_TIMEOUT", "0.5")
    s = ModelSpec("slow", "sam2_hiera_t", Source("slow.pt", f"{base}/sam2.pt", kind=kind), None, "")
    with pytest.raises(ns.ModelNotFoundError) as info:
        registry.resolve_files(s, progress=False)
    text = str(info.value)
    assert "sent nothing for 0.5 s" in text and "NAPARI_SANSA_DOWNLOAD_TIMEOUT" in text, text
    assert _cache_files(home) == []  # nothing half-written stays


def test_timeout_setting_must_be_a_positive_number(home, spec, monkeypatch):
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv("NAPARI_SANSA_DOWNLOAD_TIMEOUT", bad)
        with pytest.raises(ns.InvalidInputError, match="NAPARI_SANSA_DOWNLOAD_TIMEOUT"):
            registry.resolve_files(spec, progress=False)


def test_cached_path_that_is_a_folder(home, spec, server):
    folder = home / "weights" / "test_sam2.pt"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(ns.CheckpointError) as info:
        registry.resolve_files(spec, progress=False)
    assert str(folder) in str(info.value) and "is a folder" in str(info.value)
    assert "napari-sansa download test-tiny" in str(info.value)
    assert (folder / "inside").is_dir()  # left as it was
    assert server[1].hits == []


def test_home_that_is_a_file_or_lies_under_one(tmp_path, monkeypatch, spec):
    home_file = tmp_path / "home.txt"
    home_file.write_text("mine")
    monkeypatch.setenv("NAPARI_SANSA_HOME", str(home_file))
    with pytest.raises(ns.InvalidInputError) as info:
        registry.resolve_files(spec, progress=False)
    assert str(home_file) in str(info.value) and "is a file, not a folder" in str(info.value)
    assert main(["models"]) == 2
    monkeypatch.setenv("NAPARI_SANSA_HOME", str(home_file / "below"))
    with pytest.raises(ns.ModelNotFoundError) as info:
        registry.resolve_files(spec, progress=False)
    assert "cannot be created" in str(info.value) and "NAPARI_SANSA_HOME" in str(info.value)
    assert home_file.read_text() == "mine"


def test_first_download_is_recorded_and_later_changes_are_refused(home, spec, server, tmp_path):
    from napari_sansa.core.models.random_weights import write_random_checkpoints

    sam2, _ = registry.resolve_files(spec, progress=False)
    record = json.loads((home / "weights" / "test_sam2.pt.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(sam2.read_bytes()).hexdigest()
    assert record["url"] == spec.sam2.url
    # other valid, finite weights of the same model under the cached name: refused
    other, _ = write_random_checkpoints(tmp_path / "o", "sam2_hiera_t", image_size=256, seed=5)
    sam2.write_bytes(other.read_bytes())
    with pytest.raises(ns.CheckpointError) as info:
        ns.load_model("test-tiny", device="cpu", image_size=256)
    text = str(info.value)
    assert str(sam2) in text and "changed since" in text and record["sha256"] in text
    assert "napari-sansa download test-tiny --force" in text
    assert main(["download", "test-tiny", "--force"]) == 0  # what the message says fixes it
    assert ns.load_model("test-tiny", device="cpu", image_size=256) is not None


def test_4_kib_overwritten_in_a_cached_file_is_refused(home, spec, server):
    sam2, _ = registry.resolve_files(spec, progress=False)
    raw = bytearray(sam2.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = bytes(4096)  # same size, finite bytes
    sam2.write_bytes(bytes(raw))
    with pytest.raises(ns.CheckpointError, match="changed since.*--force"):
        registry.resolve_files(spec, progress=False)


def test_files_without_a_record_are_checked_once_then_recorded(home, spec, server, weights):
    registry.resolve_files(spec, progress=False)
    rec = home / "weights" / "test_sam2.pt.sha256.json"
    rec.unlink()  # as fetched by napari-sansa 0.1 (or put there by hand)
    registry.resolve_files(spec, progress=False)
    assert (
        json.loads(rec.read_text())["sha256"] == hashlib.sha256(weights[0].read_bytes()).hexdigest()
    )
    rec.write_text("{not json")  # a damaged record is rebuilt the same way
    registry.resolve_files(spec, progress=False)
    assert (
        json.loads(rec.read_text())["sha256"] == hashlib.sha256(weights[0].read_bytes()).hexdigest()
    )
    # a bad file without a record is refused, naming the command that replaces it
    import torch

    state = torch.load(weights[0], weights_only=True)["model"]
    state["sam_mask_decoder.iou_token.weight"] = torch.full_like(
        state["sam_mask_decoder.iou_token.weight"], float("nan")
    )
    rec.unlink()
    torch.save({"model": state}, home / "weights" / "test_sam2.pt")
    with pytest.raises(ns.CheckpointError, match="iou_token.*--force"):
        registry.resolve_files(spec, progress=False)
    assert len(server[1].hits) == 2  # nothing was fetched again without being asked


def test_a_download_removes_only_its_own_old_temporaries(home, spec, server, tmp_path):
    """Issue 18: every ``<home>/weights/.*.partial*`` older than a day was removed, a user's
    ``.my.partial.backup`` with them. Only the whole names napari-sansa's downloads make
    (now, before the package's mark, and in 0.1's ``.partial/`` folder) go, and only old."""
    import os
    import time

    weights = home / "weights"
    (weights / ".partial").mkdir(parents=True)
    token, other = "0123456789abcdef" * 2, "fedcba9876543210" * 2
    ours = [  # left by downloads killed long ago
        f".napari-sansa-tmp.test_sam2.pt.{token}.partial",
        f".napari-sansa-tmp.test_sam2.pt.{token}.partial.zip",
        f".napari-sansa-tmp.test_adapters.pth.{token}.partialab_cd123.part",  # gdown's
        f".napari-sansa-tmp.test_sam2.pt.sha256.json.{other}.partial",
        f".test_sam2.pt.{token}.partial",  # before the mark
        f".test_adapters.pth.{token}.partialx1y2z3w4tmp",  # gdown 5's, before the mark
        f".partial/test_sam2.pt.{token}.download",  # 0.1
        f".partial/test_sam2.pt.{token}.pick",
        f".partial/test_adapters.pth.{token}.downloadab_cd123.part",
        ".partial/tmpk2j4_9xa",  # pooch's, in 0.1's staging folder
    ]
    users = [
        ".my.partial.backup",
        ".notes.partial",
        f".test_sam2.pt.{token}.partial.backup",
        f".napari-sansa-tmp.test_sam2.pt.{token[:-1]}.partial",  # not a token of ours
        f".napari-sansa-tmp.test_sam2.pt.{token.upper()}.partial",
        "tmpk2j4_9xa",  # pooch's name outside 0.1's staging folder: no mark, not touched
        ".partial/my notes.txt",
        f".partial/test_sam2.pt.{token}.download.bak",
        ".partial/tmpk2j4_9xa1",
    ]
    day_ago = time.time() - 2 * 86400
    for name in ours + users:
        (weights / name).write_bytes(b"x")
        os.utime(weights / name, (day_ago, day_ago))
    busy = weights / f".napari-sansa-tmp.test_sam2.pt.{other}.partial"  # in progress
    busy.write_bytes(b"being written")
    mine = tmp_path / "mine.txt"  # a link named like a temporary: neither it nor its file go
    mine.write_bytes(b"mine")
    link = weights / f".napari-sansa-tmp.x.{other}.partial"
    link.symlink_to(mine)
    os.utime(mine, (day_ago, day_ago))
    os.utime(link, (day_ago, day_ago), follow_symlinks=False)

    for _ in range(2):
        registry.resolve_files(spec, force=True, progress=False)
    left = {p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file()}
    assert not left & set(ours)
    assert set(users) <= left and busy.is_file()
    assert link.is_symlink() and mine.read_bytes() == b"mine"
    assert (weights / "test_sam2.pt").is_file() and (weights / "test_adapters.pth").is_file()


def test_unmarked_temporaries_are_only_those_of_registered_files(home, spec, server):
    """Issue 18 review: the names of the temporaries before the package's mark,
    ``.<name>.<32 hex>.partial[.zip]``, were recognised for any name, so a user's
    ``.my.<hex>.partial`` and ``.photo.jpg.<hex>.partial.zip`` went after a download. Only
    the names of the files napari-sansa downloads there (the registry's file names and
    their ``.sha256.json`` records) are recognised without the mark; in 0.1's ``.partial/``
    folder the same for its ``<file>.<32 hex>.download`` / ``.pick``."""
    import os
    import time

    weights = home / "weights"
    (weights / ".partial").mkdir(parents=True)
    h = "0123456789abcdef" * 2
    ours = [
        f".test_sam2.pt.{h}.partial",
        f".test_adapters.pth.{h}.partial.zip",
        f".sansa_universal.pth.{h}.partial",  # a built-in model's file
        f".test_sam2.pt.sha256.json.{h}.partial",  # its record
        f".partial/sansa_universal.pth.{h}.download",
        f".partial/test_sam2.pt.{h}.pick",
    ]
    users = [  # the reviewer's names, and others alike
        f".my.{h}.partial",
        f".photo.jpg.{h}.partial.zip",
        f".x\n.{h}.partial",
        f".my.test_sam2.pt.{h}.partial",
        f".test_sam2.pt.bak.{h}.partial",
        f".partial/my.tif.{h}.download",
        f".partial/photo.jpg.{h}.pick",
    ]
    day_ago = time.time() - 3 * 86400
    for name in ours + users:
        (weights / name).write_bytes(b"x")
        os.utime(weights / name, (day_ago, day_ago))
    for _ in range(3):
        registry.resolve_files(spec, force=True, progress=False)
    left = {p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file()}
    assert set(users) <= left, sorted(set(users) - left)
    assert not left & set(ours), sorted(left & set(ours))
