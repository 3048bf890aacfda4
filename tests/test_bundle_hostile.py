"""Hostile and careless bundles: archives with links, escapes and bombs, lying or malformed
`bundle.json`, misbehaving servers, broken caches, and two processes opening one URL.

Each bundle here is made on the spot with `tarfile`/`zipfile`; URLs are served by a real HTTP
server on 127.0.0.1 (`bundle_kit.Server`)."""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_support import resources
from embeddings.bundle.open import BundleError, open_bundle
from tests.harness import bundles as kit
from tests.harness.paths import REPO

LARGE = 64 << 20  # a member far larger than any file size a test bundle declares


def outside_files(tmp_path: Path, cache: Path, *keep: Path) -> list[str]:
    """Files under `tmp_path` that are neither in the cache nor among the test's own inputs."""
    return [
        name
        for name in kit.files_under(tmp_path)
        if not (tmp_path / name).is_relative_to(cache)
        and not any((tmp_path / name).is_relative_to(k) for k in keep)
    ]


def served_files(cache: Path) -> list[str]:
    """What the cache holds besides its lock files."""
    return [name for name in kit.files_under(cache) if not name.endswith(".lock")]


# -- archives: members that are not regular files or folders, paths that leave the folder ----


def link_chain(destination: Path) -> list:
    """The members of the link chain that gets past `tarfile`'s `data` filter on Python before
    3.11.13: folders whose expanded path passes PATH_MAX, each reached by a one-letter link, a
    link resolving back up, then `escape` three levels above `destination`, and a file in it."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - len(str(destination)) - 1) // 17)
    members, path = [], ""
    for step in steps:
        members.append(kit.special(os.path.join(path, component), tarfile.DIRTYPE))
        members.append(kit.special(os.path.join(path, step), tarfile.SYMTYPE, component))
        path = os.path.join(path, component)
    link = os.path.join(*steps, "l" * 254)
    members.append(kit.special(link, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    members.append(kit.special("escape", tarfile.SYMTYPE, os.path.join(link, "..", "..", "..")))
    members.append(kit.regular("escape/outside/pwned.txt", b"pwned"))
    return members


def test_a_link_chain_past_path_max_writes_nothing_outside_the_cache(tmp_path):
    cache = tmp_path / "cache"
    destination = cache / ".0123456789abcdef.unpack-abcdefgh" / "payload"  # where it unpacks
    (tmp_path / "in").mkdir()
    archive = kit.bundle_tar(tmp_path / "in" / "chain.tar.gz", link_chain(destination))
    # refused at its first member that is not a listed file (its first folder, or link)
    refusal = "holds the folder d+, which holds no file bundle.json lists; it is not served"
    with pytest.raises(BundleError, match=refusal):
        open_bundle(str(archive), cache=cache)
    archive = kit.bundle_tar(tmp_path / "in" / "links.tar.gz", link_chain(destination)[1:])
    with pytest.raises(BundleError, match="'a', a symbolic link; a bundle holds regular files"):
        open_bundle(str(archive), cache=cache)
    assert not (tmp_path / "outside").exists()
    assert outside_files(tmp_path, cache, tmp_path / "in") == []
    assert served_files(cache) == []


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (kit.special("images/b.png", tarfile.SYMTYPE, "a.png"), "a symbolic link"),
        (kit.special("images/c.png", tarfile.LNKTYPE, "images/a.png"), "a hard link"),
        (kit.special("pipe", tarfile.FIFOTYPE), "a FIFO"),
        (kit.special("console", tarfile.CHRTYPE), "a character device"),
        (kit.special("disk", tarfile.BLKTYPE), "a block device"),
    ],
    ids=["symlink-inside", "hardlink-inside", "fifo", "char-device", "block-device"],
)
def test_an_archive_member_that_is_no_regular_file_is_refused(tmp_path, member, kind):
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz", [member])
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=f"{kind}; a bundle holds regular files and folders"):
        open_bundle(str(archive), cache=cache)
    assert served_files(cache) == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/cron.d/job", "is absolute"),
        ("../beside-the-cache.txt", "climbs out of the bundle folder"),
        ("images/../../up.txt", "climbs out of the bundle folder"),
        ("images/CON.png", "uses the reserved name 'CON.png'"),
        ("aux", "uses the reserved name 'aux'"),
        ("images\\..\\..\\evil.txt", "holds a backslash"),
        ("images/" + "n" * 300, "holds a name longer than 255 bytes"),
        ("C:/evil.txt", "starts with a drive letter"),
    ],
    ids=["absolute", "dotdot", "dotdot-inside", "reserved", "reserved-bare", "backslash",
         "long-name", "drive"],
)  # fmt: skip
def test_an_archive_member_path_that_leaves_or_is_reserved_is_refused(tmp_path, name, problem):
    (tmp_path / "in").mkdir()
    archive = kit.bundle_tar(tmp_path / "in" / "bundle.tar.gz", [kit.regular(name, b"x")])
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=f"the path .* {problem}"):
        open_bundle(str(archive), cache=cache)
    assert served_files(cache) == []
    assert outside_files(tmp_path, cache, tmp_path / "in") == []


def test_a_zip_member_that_is_a_link_or_reserved_is_refused(tmp_path):
    link = zipfile.ZipInfo("images/b.png")
    link.external_attr = (0o120777) << 16  # a symbolic link, as Info-ZIP stores one
    archive = kit.bundle_zip(tmp_path / "link.zip", [(link, b"../../../etc/passwd")])
    with pytest.raises(BundleError, match="a symbolic link; a bundle holds regular files"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    archive = kit.bundle_zip(tmp_path / "reserved.zip", [("images/nul.png", b"x")])
    with pytest.raises(BundleError, match="the reserved name 'nul.png'"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []


# -- size: an archive writes no more than bundle.json declares, within the cap --------------


@pytest.fixture
def small_file_limit():
    """The process may write no file over 16 MiB while the test runs (so a bundle that would
    unpack a large member cannot fill the disk, before the fix or after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def lying(files: dict[str, bytes]) -> dict:
    """A manifest listing `zeros.bin` as 10 bytes, beside the honest files."""
    manifest = kit.manifest_of(files)
    manifest["files"].append({"path": "zeros.bin", "size": 10, "sha256": "0" * 64})
    return manifest


def test_a_tar_member_larger_than_listed_is_refused_before_it_is_written(
    tmp_path, small_file_limit
):
    big = tarfile.TarInfo("zeros.bin")
    big.size = LARGE
    archive = kit.bundle_tar(
        tmp_path / "bomb.tar.gz", [(big, kit.Zeros(LARGE))], manifest=lying(kit.FILES)
    )
    assert archive.stat().st_size < LARGE // 100  # a compression bomb
    with pytest.raises(BundleError, match=f"zeros.bin of {LARGE:,} bytes, and bundle.json lists"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []


def test_a_zip_member_larger_than_listed_is_refused_before_it_is_written(
    tmp_path, small_file_limit
):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("bundle.json", json.dumps(lying(kit.FILES)))
        for name, data in kit.FILES.items():
            packed.writestr(name, data)
        with packed.open("zeros.bin", "w") as out:
            for _ in range(LARGE >> 20):
                out.write(bytes(1 << 20))
    with pytest.raises(BundleError, match=f"zeros.bin of {LARGE:,} bytes, and bundle.json lists"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []


def test_a_bundle_declaring_more_than_the_cap_is_refused_before_unpacking(
    tmp_path, monkeypatch, small_file_limit
):
    files = {**kit.FILES, "zeros.bin": bytes(LARGE)}  # honest, and over the cap set here
    manifest = kit.manifest_of(files)
    big = tarfile.TarInfo("zeros.bin")
    big.size = LARGE
    members = [kit.regular("bundle.json", json.dumps(manifest).encode())]
    members += [kit.regular(n, d) for n, d in kit.FILES.items()] + [(big, kit.Zeros(LARGE))]
    archive = kit.write_tar(tmp_path / "big.tar.gz", members)
    monkeypatch.setenv("EMBEDDINGS_BUNDLE_MAX_GB", "0.01")
    with pytest.raises(BundleError, match="declares .* bytes, more than the bundle size limit"):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []
    monkeypatch.setenv("EMBEDDINGS_BUNDLE_MAX_GB", "lots")
    with pytest.raises(BundleError, match="EMBEDDINGS_BUNDLE_MAX_GB='lots' is not a positive"):
        open_bundle(str(archive), cache=tmp_path / "cache")


def test_publish_writes_bundle_json_first_and_no_path_of_its_machine(
    built_catalogue, tmp_path, tmp_path_factory, monkeypatch
):
    from embeddings.bundle.publish import publish_bundle

    monkeypatch.setenv("EMBEDDINGS_BUNDLE_MAX_GB", "0.0001")  # 100 kB: this bundle is larger
    tar = publish_bundle(built_catalogue, ["pixels"], tmp_path / "shop", archive="tar.gz")
    assert [n for n in tar.notes if "more than a server opens with the size limit" in n]
    with pytest.raises(BundleError, match="more than the bundle size limit 0.0001 GB"):
        open_bundle(str(tar.archive), cache=tmp_path / "cache")
    monkeypatch.delenv("EMBEDDINGS_BUNDLE_MAX_GB")
    with tarfile.open(tar.archive) as packed:
        members = packed.getmembers()
    assert members[0].name == "bundle.json"
    assert {m.uname for m in members} == {""}  # no user name of the publishing machine
    zipped = publish_bundle(built_catalogue, ["pixels"], tmp_path / "shop-z", archive="zip")
    with zipfile.ZipFile(zipped.archive) as packed:
        assert packed.namelist()[0] == "bundle.json"
    machine = str(tmp_path_factory.getbasetemp())  # the catalogue, its source, the models cache
    for name in kit.files_under(tar.folder):
        assert machine.encode() not in (tar.folder / name).read_bytes(), name
    info = json.loads((tar.folder / "catalog.json").read_text())
    assert "published_from" not in info and info["source"] == Path(info["source"]).name
    opened = open_bundle(str(tar.archive), cache=tmp_path / "cache")
    assert opened.manifest["name"] == built_catalogue.name


def test_an_archive_published_before_bundle_json_came_first_still_opens(tmp_path):
    archive = kit.bundle_tar(tmp_path / "old.tar.gz", last=True)
    opened = open_bundle(str(archive), cache=tmp_path / "cache")
    assert (opened.folder / "images/a.png").read_bytes() == kit.FILES["images/a.png"]


# -- downloads: a size cap and a total deadline ---------------------------------------------


@pytest.fixture
def server(tmp_path):
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz")
    running = kit.Server(
        {
            "/bundle.tar.gz": kit.serve_file(archive),
            "/held.tar.gz": kit.held_half_way(archive),
            "/endless": kit.endless,
            "/huge": functools.partial(kit.endless, announce=10**12),
            "/trickle": kit.trickle,
            "/chunked-cut": kit.cut_chunked,
            "/to-ftp": kit.redirect_to("ftp://127.0.0.1:9/bundle.tar.gz"),
            "/to-bundle": kit.redirect_to("/bundle.tar.gz"),
        }
    )
    yield running
    running.close()


def test_an_endless_body_is_cut_off_at_the_size_cap(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_BUNDLE_MAX_GB", "0.001")  # 1 MB
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=r"passed the bundle size limit 0\.001 GB"):
        open_bundle(server.url("/endless"), cache=cache)
    assert kit.wait_until(lambda: server.sent > 0)
    assert served_files(cache) == []
    with pytest.raises(BundleError, match="announces 1,000,000,000,000 bytes, more than the"):
        open_bundle(server.url("/huge"), cache=cache)
    assert served_files(cache) == []
    # the whole endless body would be 64 MB; the client hung up within a socket buffer of 1 MB
    assert server.sent < 32 << 20


def test_a_trickling_server_is_cut_off_at_the_deadline(server, tmp_path):
    from embeddings.bundle.limits import BundleLimits

    limits = BundleLimits(max_bytes=10**9, deadline_s=1.0)
    with pytest.raises(BundleError, match=r"did not finish within 1 s \(\d+ bytes arrived\)"):
        open_bundle(server.url("/trickle"), cache=tmp_path / "cache", limits=limits)
    assert served_files(tmp_path / "cache") == []


def test_a_chunked_body_cut_mid_chunk_is_a_message(server, tmp_path):
    with pytest.raises(BundleError, match="failed after 100 bytes.*IncompleteRead.*tries again"):
        open_bundle(server.url("/chunked-cut"), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []


def test_a_redirect_is_followed_within_http_only(server, tmp_path):
    with pytest.raises(
        BundleError, match="a redirect to ftp://127.0.0.1:9/bundle.tar.gz was refused"
    ):
        open_bundle(server.url("/to-ftp"), cache=tmp_path / "cache")
    opened = open_bundle(server.url("/to-bundle"), cache=tmp_path / "cache")
    assert (opened.folder / "catalog.json").read_bytes() == kit.FILES["catalog.json"]


# -- bundle.json never vouches for itself ----------------------------------------------------


def test_files_bundle_json_does_not_list_are_refused(tmp_path):
    for number, manifest in enumerate([{"format": 1, "name": "shop"}, kit.manifest_of({})]):
        archive = kit.bundle_tar(tmp_path / f"empty-{number}.tar.gz", manifest=manifest)
        with pytest.raises(BundleError, match="lists no files .*every file of a bundle"):
            open_bundle(str(archive), cache=tmp_path / "cache")
    unlisted = kit.bundle_tar(tmp_path / "unlisted.tar.gz", [kit.regular("images/x.png", b"x")])
    with pytest.raises(BundleError, match="holds images/x.png .*does not list it"):
        open_bundle(str(unlisted), cache=tmp_path / "cache")
    unlisted = kit.bundle_zip(tmp_path / "unlisted.zip", [("images/x.png", b"x")])
    with pytest.raises(BundleError, match="holds images/x.png .*does not list it"):
        open_bundle(str(unlisted), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []
    folder = kit.bundle_folder(tmp_path / "folder")
    (folder / "images" / "x.png").write_bytes(b"x")
    with pytest.raises(BundleError, match="images/x.png is not listed in bundle.json"):
        open_bundle(str(folder), cache=tmp_path / "cache")


def entries(**change) -> list[dict]:
    entry = kit.manifest_of(kit.FILES)["files"]
    return [{**e, **change} if e["path"] == "catalog.json" else e for e in entry]


def without(key: str) -> list[dict]:
    return [{k: v for k, v in e.items() if k != key} for e in entries()]


MALFORMED = {
    "no-sha256": (kit.manifest_of(kit.FILES, files=without("sha256")), "without a size in bytes"),
    "no-size": (kit.manifest_of(kit.FILES, files=without("size")), "without a size in bytes"),
    "files-a-dict": (kit.manifest_of(kit.FILES, files={"catalog.json": {}}), "lists no files"),
    "files-null": (kit.manifest_of(kit.FILES, files=None), "lists no files"),
    "manifest-a-list": ([kit.manifest_of(kit.FILES)], "is not a JSON object"),
    "name-verified": (kit.manifest_of(kit.FILES, name=".verified"), "is not a plain folder name"),
    "name-nul": (kit.manifest_of(kit.FILES, name="sh\0op"), "is not a plain folder name"),
    "name-300": (kit.manifest_of(kit.FILES, name="s" * 300), "is not a plain folder name"),
    "entry-a-string": (kit.manifest_of(kit.FILES, files=["catalog.json"]), "entry 1 of 'files'"),
    "path-missing": (kit.manifest_of(kit.FILES, files=entries(path=None)), "is not text"),
}  # fmt: skip


@pytest.mark.parametrize(("manifest", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_bundle_json_is_a_message(tmp_path, manifest, message):
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz", manifest=manifest)
    with pytest.raises(BundleError, match=message):
        open_bundle(str(archive), cache=tmp_path / "cache")
    assert served_files(tmp_path / "cache") == []


def test_a_cache_that_cannot_be_made_is_a_message(tmp_path):
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz")
    (tmp_path / "a-file").write_text("not a folder")
    for cache in (tmp_path / "a-file", tmp_path / "a-file" / "cache"):
        with pytest.raises(BundleError, match="the bundle cache .* cannot be used"):
            open_bundle(str(archive), cache=cache)


def test_a_sha256_with_a_folder_is_refused(tmp_path):
    folder = kit.bundle_folder(tmp_path / "folder")
    assert open_bundle(str(folder)).folder == folder.resolve()
    with pytest.raises(BundleError, match="EMBEDDINGS_BUNDLE_SHA256 is set, but .* is a folder"):
        open_bundle(str(folder), expected_sha256="0" * 64)
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz")
    with pytest.raises(BundleError, match="EMBEDDINGS_BUNDLE_SHA256='sha' is not a SHA-256"):
        open_bundle(str(archive), cache=tmp_path / "cache", expected_sha256="sha")


@pytest.mark.parametrize("case", ["manifest-a-list", "cache-a-file"])
def test_the_app_shows_a_bundle_failure_as_a_message(tmp_path, monkeypatch, case):
    manifest = [kit.manifest_of(kit.FILES)] if case == "manifest-a-list" else None
    archive = kit.bundle_tar(tmp_path / "bundle.tar.gz", manifest=manifest)
    cache = tmp_path / "cache"
    if case == "cache-a-file":
        cache.write_text("not a folder")
    monkeypatch.setenv("EMBEDDINGS_BUNDLE", str(archive))
    monkeypatch.setenv("EMBEDDINGS_BUNDLE_CACHE", str(cache))
    monkeypatch.setenv("EMBEDDINGS_DATA", str(tmp_path / "no-data"))
    monkeypatch.setattr(resources, "_bundles", {})  # a fresh server process
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    shown = "\n".join(str(element.value) for element in at.error)
    assert "The catalogue bundle could not be opened" in shown
    assert ("is not a JSON object" if case == "manifest-a-list" else "cannot be used") in shown


# -- the cache: one maker per entry, waiting shown, damaged entries made again ---------------

OPEN_AND_SAY = """
import sys
from embeddings.bundle.open import open_bundle

def progress(event):
    if event.stage == "waiting":
        print("waiting", flush=True)

print("served", open_bundle(sys.argv[1], cache=sys.argv[2], progress=progress).folder, flush=True)
"""


def test_two_processes_on_one_uncached_url_download_it_once(server, tmp_path):
    command = [sys.executable, "-c", OPEN_AND_SAY, server.url("/held.tar.gz"), str(tmp_path / "c")]
    run = functools.partial(
        subprocess.Popen, command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    first = run()
    assert server.half_sent.wait(120), first.communicate()  # it holds the entry, half downloaded
    second = run()
    said_first = second.stdout.readline()  # before the first process finishes
    server.release.set()
    out_first, err_first = first.communicate(timeout=300)
    out_second, err_second = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err_first + err_second
    assert said_first == "waiting\n"
    assert out_first.split()[-1] == out_second.split()[-1]  # the same folder
    assert server.requests == 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".")) == [
        f".{Path(out_first.split()[-1]).parent.name}.lock"
    ]  # no temporary file is left


def test_a_cache_entry_that_lost_its_mark_or_a_file_is_made_again(server, tmp_path):
    cache, url = tmp_path / "cache", server.url("/bundle.tar.gz")
    opened = open_bundle(url, cache=cache)
    (opened.folder.parent / ".verified").unlink()
    again = open_bundle(url, cache=cache)
    assert again.folder == opened.folder and server.requests == 2
    (opened.folder / "images" / "a.png").unlink()
    healed = open_bundle(url, cache=cache)
    assert (healed.folder / "images" / "a.png").read_bytes() == kit.FILES["images/a.png"]
    assert server.requests == 3
    assert open_bundle(url, cache=cache).folder == opened.folder and server.requests == 3
