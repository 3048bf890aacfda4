"""Publishing a catalogue as a bundle, and opening bundles: folders, archives and URLs over HTTP."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from embeddings.bridge import train_bridge_for_catalogue
from embeddings.bundle.open import BundleError, check_folder, open_bundle
from embeddings.bundle.publish import publish_bundle
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.derived.duplicates import find_duplicates, load_pairs
from embeddings.derived.maps import load_map, make_maps
from embeddings.index.base import score_tolerance
from embeddings.index.opening import open_index
from embeddings.quality.evaluate import evaluate_catalogue, load_results, save_results
from embeddings.search.searcher import make_searcher


@pytest.fixture(scope="module")
def source(built_catalogue, copy_catalogue) -> Catalogue:
    """The synthetic catalogue (pixels as float32, efficientnet-lite0) with a bridge and an
    evaluation, as a catalogue someone would publish."""
    catalogue = copy_catalogue(built_catalogue)
    directory = catalogue.directory
    train_bridge_for_catalogue(catalogue, "pixels")
    save_results(catalogue, evaluate_catalogue(catalogue, queries=20))
    make_maps(directory, ["pixels"])
    find_duplicates(directory, "efficientnet-lite0")
    return catalogue


@pytest.fixture(scope="module")
def bundle(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "shop"
    return publish_bundle(source, ["pixels", "efficientnet-lite0"], out, archive="tar.gz")


def test_a_bundle_holds_what_serving_needs_and_nothing_twice(source, bundle):
    folder = bundle.folder
    manifest = check_folder(folder, full=True)  # every file listed, with its size and SHA-256
    listed = {entry["path"] for entry in manifest["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk - listed == {"bundle.json"} and listed <= on_disk
    assert not [p for p in listed if p.endswith("/vectors.npy")]  # the index holds the vectors
    assert (
        json.loads((folder / "models/pixels/manifest.json").read_text())["vectors_dtype"] == "uint8"
    )
    assert {"bridges/pixels/weights.npy", "evaluation/results.json", "catalog.json"} <= listed
    assert len([p for p in listed if p.startswith("images/")]) == len(source)
    assert set(bundle.parts) >= {
        "thumbnails",
        "model pixels",
        "model efficientnet-lite0",
        "bridge pixels",
        "item table",
    }
    assert bundle.archive is not None and bundle.archive_bytes < bundle.total_bytes
    # the query encoders: the CNN's ONNX export and the bridge's sentence encoder, no torch file
    encoders = {p.split("/")[1] for p in listed if p.startswith("encoders/")}
    assert encoders == {"efficientnet-lite0", "all-minilm-l6-v2"}
    assert {p.rsplit("/", 1)[1] for p in listed if p.startswith("encoders/")} >= {
        "image.onnx",
        "text.onnx",
        "tokenizer.json",
        "preprocess.json",
        "manifest.json",
    }
    assert not [p for p in listed if p.endswith((".pth", ".pt", ".bin", ".safetensors"))]
    # the saved map and near-duplicate pairs came along (only those that were computed)
    assert {"maps/pixels/manifest.json", "duplicates/efficientnet-lite0/manifest.json"} <= listed
    assert not [p for p in listed if p.startswith(("maps/efficientnet", "duplicates/pixels"))]


def test_a_bundle_serves_the_same_answers(source, bundle):
    served = Catalogue.open(bundle.folder)
    assert served.fingerprint == source.fingerprint and served.root == bundle.folder / "images"
    for model_id in ("pixels", "efficientnet-lite0"):
        assert len(open_index(served, model_id)) == len(source)
        want = make_searcher(source).search_item("red/circle_0", [model_id], 8)[model_id]
        got = make_searcher(served).search_item("red/circle_0", [model_id], 8)[model_id]
        assert [h.id for h in got] == [h.id for h in want]
        tol = 2 * score_tolerance(open_index(served, model_id).dim)
        assert np.allclose([h.score for h in got], [h.score for h in want], atol=tol)
    assert make_searcher(served).search_text("Red circle product", ["pixels"], 5)["pixels"]
    assert load_results(served) is not None  # the saved evaluation still matches the indexes
    assert served.image_path("red/circle_0").read_bytes()[:2] in (b"\x89P", b"\xff\xd8")
    # the map and the pairs are current for the bundle's own copy of the indexes
    served_map, source_map = load_map(served, "pixels"), load_map(source, "pixels")
    assert served_map.ids == source_map.ids
    assert np.array_equal(served_map.coords, source_map.coords)
    served_pairs = load_pairs(served, "efficientnet-lite0")
    assert np.array_equal(served_pairs.first, load_pairs(source, "efficientnet-lite0").first)


SERVE_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch fails, as in the deployment's environment
from embeddings.bundle.open import open_bundle
from embeddings.catalogue import Catalogue
from embeddings.images import open_rgb
from embeddings.models.onnx_cache import add_read_only_home
from embeddings.search.searcher import make_searcher

opened = open_bundle(sys.argv[1])
add_read_only_home(opened.encoders_dir)
served = Catalogue.open(opened.folder)
searcher = make_searcher(served)
text = searcher.search_text("Red circle product", ["pixels"], 3)["pixels"]
upload = open_rgb(served.image_path("red/circle_0"))
image = searcher.search_image(upload, ["efficientnet-lite0"], 3)["efficientnet-lite0"]
print(len(text), image[0].id, round(image[0].score, 3))
"""


def test_a_bundle_answers_text_and_uploads_with_its_own_encoders_and_no_torch(bundle, tmp_path):
    env = {**os.environ, "EMBEDDINGS_MODELS": str(tmp_path / "empty-cache")}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, str(bundle.folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # its own thumbnail is its nearest product: the upload ran the bundled CNN export
    assert done.stdout.split() == ["3", "red/circle_0", "1.0"]
    assert not (tmp_path / "empty-cache").exists()  # nothing exported, nothing written


@pytest.mark.slow
def test_publish_refuses_an_existing_folder_and_a_model_not_built(source, bundle, tmp_path, capsys):
    base = ["publish", "--catalog", str(source.directory), "--out"]
    assert main([*base, str(bundle.folder), "--models", "pixels"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "b"), "--models", "pixels,resnet50"]) == 2
    assert "'resnet50' has no up-to-date index" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main([*base, str(tmp_path / "b"), "--models", "pixels", "--archive", "zip"]) == 0
    out = capsys.readouterr().out
    assert "thumbnails" in out and "model pixels" in out and "archive b.zip" in out


def test_an_archive_is_unpacked_once_into_the_cache_and_checked(bundle, tmp_path):
    first = open_bundle(str(bundle.archive), cache=tmp_path / "cache")
    assert first.name == "shop" and (first.folder / "bundle.json").is_file()
    again = open_bundle(str(bundle.archive), cache=tmp_path / "cache")
    assert again.folder == first.folder
    # one entry, beside its lock file
    assert len([p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"]) == 1
    with pytest.raises(BundleError, match="not served"):
        open_bundle(str(bundle.archive), cache=tmp_path / "other", expected_sha256="0" * 64)
    assert not [p for p in (tmp_path / "other").iterdir() if p.suffix != ".lock"]


@pytest.mark.slow
def test_a_tampered_file_in_an_archive_is_refused(bundle, tmp_path):
    unpacked = tmp_path / "unpacked"
    shutil.copytree(bundle.folder, unpacked)
    with open(unpacked / "models/pixels/ids.txt", "a") as handle:
        handle.write("planted\n")
    archive = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
            packed.add(path, arcname=path.relative_to(unpacked).as_posix())
    with pytest.raises(BundleError, match="ids.txt of .* bytes, and bundle.json lists"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]


class _Server:
    """An HTTP server on 127.0.0.1 serving one archive; `cut` sends only that many bytes while
    announcing the full length (a broken download)."""

    def __init__(self, archive: Path):
        self.archive, self.cut, self.requests = archive, None, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                owner.requests += 1
                data = owner.archive.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if owner.cut is None else data[: owner.cut])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{archive.name}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_url_is_downloaded_once_and_a_broken_download_is_retried(bundle, tmp_path):
    server = _Server(bundle.archive)
    cache = tmp_path / "cache"
    try:
        server.cut = bundle.archive_bytes // 2
        with pytest.raises(BundleError, match="stopped at .* bytes.*next start tries again"):
            open_bundle(server.url, cache=cache)
        # nothing partial is kept or served (the entry's lock file stays)
        assert not [p for p in cache.iterdir() if p.suffix != ".lock"]
        server.cut = None
        steps = []
        opened = open_bundle(server.url, cache=cache, progress=steps.append)
        size = bundle.archive_bytes
        assert ("download", size, size) in [(s.stage, s.done, s.total) for s in steps]
        assert all(s.unit == "bytes" for s in steps if s.stage == "download")
        assert len(open_index(Catalogue.open(opened.folder), "pixels")) == 48
    finally:
        server.close()
    again = open_bundle(server.url, cache=cache)  # cached: the server is gone
    assert again.folder == opened.folder and server.requests == 2


def test_publish_takes_the_bridges_asked_for(source, tmp_path, capsys):
    base = ["publish", "--catalog", str(source.directory), "--models", "pixels,efficientnet-lite0"]
    assert main([*base, "--out", str(tmp_path / "none"), "--bridges", "none"]) == 0
    listed = {e["path"] for e in check_folder(tmp_path / "none", full=True)["files"]}
    assert not [p for p in listed if p.startswith("bridges/")]
    # no bridge, no sentence encoder: only the CNN's export goes in
    assert {p.split("/")[1] for p in listed if p.startswith("encoders/")} == {"efficientnet-lite0"}
    assert main([*base, "--out", str(tmp_path / "other"), "--bridges", "resnet50"]) == 2
    assert "only published models' bridges" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_publish_waits_for_a_build_committing_and_copies_one_build(source, tmp_path):
    """A build's commit swaps the table, indexes and bridges; publish reads under the shared
    commit lock, so it starts copying only once the commit is over."""
    import threading

    from embeddings.locks import commit_lock

    out, finished = tmp_path / "bundle", threading.Event()

    def publish():
        publish_bundle(source, ["pixels"], out, bridges=[])
        finished.set()

    with commit_lock(source.directory, exclusive=True):
        worker = threading.Thread(target=publish)
        worker.start()
        assert not finished.wait(2)
        assert not out.exists() and not list(tmp_path.glob(".bundle.publishing"))
    worker.join(timeout=300)
    assert finished.is_set() and (out / "bundle.json").is_file()
