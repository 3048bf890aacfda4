"""Bundle archives made on the spot (honest or hostile), and a real HTTP server on 127.0.0.1 that
serves them or misbehaves (endless, trickling, cut bodies)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

#: The files of a small honest bundle (the opener checks files, not what they mean).
FILES = {"catalog.json": b'{"name": "shop"}', "images/a.png": b"\x89PNG not really"}


def manifest_of(contents: dict[str, bytes], /, **fields) -> dict:
    """The `bundle.json` of `contents` (path -> bytes), with `fields` set over it."""
    entries = [
        {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(contents.items())
    ]
    return {"format": 1, "name": "shop", "files": entries, **fields}


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(data), 0o644
    return member, io.BytesIO(data)


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode = kind, linkname, 0o777
    return member, None


class Zeros(io.RawIOBase):
    """`size` zero bytes, read in blocks (a large member without holding it in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def write_tar(path: Path, members, mode: str = "w:gz") -> Path:
    """A tar archive of (TarInfo, data stream or None) members, in this order."""
    options = {"compresslevel": 1} if mode == "w:gz" else {}
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT, **options) as packed:
        for member, data in members:
            packed.addfile(member, data)
    return path


def bundle_tar(path: Path, extra=(), *, manifest=None, files=FILES, last=False) -> Path:
    """An honest bundle (its `bundle.json` first, or `last`), then the `extra` members."""
    listing = regular("bundle.json", json.dumps(manifest or manifest_of(files)).encode())
    members = [regular(name, data) for name, data in files.items()]
    members = [*members, listing] if last else [listing, *members]
    return write_tar(path, [*members, *extra])


def bundle_zip(path: Path, extra=(), *, manifest=None, files=FILES) -> Path:
    """An honest bundle as a zip, then `extra` (ZipInfo or name, bytes) members."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("bundle.json", json.dumps(manifest or manifest_of(files)))
        for name, data in [*files.items(), *extra]:
            packed.writestr(name, data)
    return path


def bundle_folder(path: Path, files=FILES, manifest=None) -> Path:
    listing = json.dumps(manifest or manifest_of(files)).encode()
    for name, data in {**files, "bundle.json": listing}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


Route = Callable[[http.server.BaseHTTPRequestHandler, "Server"], None]


class Server:
    """A real HTTP server on 127.0.0.1 (a thread); `routes` maps a path to what it sends."""

    def __init__(self, routes: dict[str, Route]):
        self.routes, self.requests, self.sent = routes, 0, 0
        self.half_sent, self.release = threading.Event(), threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                owner.requests += 1
                # the client may hang up: what a refused download does
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner.routes[self.path](self, owner)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def send(self, handler, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        self.sent += len(data)


def serve_file(archive: Path) -> Route:
    def route(handler, server: Server) -> None:
        data = archive.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        server.send(handler, data)

    return route


def held_half_way(archive: Path) -> Route:
    """The first request gets half the file, then waits for `server.release`; later ones all."""

    def route(handler, server: Server) -> None:
        data = archive.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if server.requests == 1:
            server.send(handler, data[: len(data) // 2])
            server.half_sent.set()
            server.release.wait(120)
            data = data[len(data) // 2 :]
        server.send(handler, data)

    return route


def endless(handler, server: Server, *, announce: int | None = None) -> None:
    """Zeros with no length (or a false one), until the client hangs up (at most 64 MB)."""
    handler.send_response(200)
    if announce is not None:
        handler.send_header("Content-Length", str(announce))
    handler.end_headers()
    block = bytes(64 << 10)
    while server.sent < 64 << 20:
        server.send(handler, block)


def trickle(handler, server: Server) -> None:
    """One byte every 0.2 s of an announced 10,000 (until the client hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "10000")
    handler.end_headers()
    for _ in range(10_000):
        server.send(handler, b"\0")
        if server.release.wait(0.2):
            return


def cut_chunked(handler, server: Server) -> None:
    """A chunked body whose first chunk announces 4096 bytes and stops after 100."""
    handler.protocol_version = "HTTP/1.1"
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    server.send(handler, b"1000\r\n" + bytes(100))
    handler.close_connection = True


def redirect_to(location: str) -> Route:
    def route(handler, server: Server) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def wait_until(condition: Callable[[], bool], seconds: float = 120) -> bool:
    """Poll `condition` (a safety bound for a server thread, not a timing assertion)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def files_under(folder: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, dirs, names in os.walk(folder)
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]
    )
