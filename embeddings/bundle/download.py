"""Downloading a bundle archive over HTTP(S) within the limits (`embeddings.bundle.limits`).

The body goes into a file the caller made for this download alone. A body announced larger than
the cap is refused before a byte is read; a body without a length is cut off as soon as it passes
the cap; a server that trickles is cut off at the total deadline (reads return what has arrived,
so no single read can hold the download past it, and each read waits at most `READ_TIMEOUT_S`).
A body that stops short of its announced length, or a chunked body cut mid-chunk, is refused;
so is a redirect to anything but HTTP(S). Every failure is a `BundleError`.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from embeddings.bundle.limits import READ_TIMEOUT_S, BundleLimits
from embeddings.bundle.manifest import BundleError
from embeddings.progress import Progress, ProgressFn

BLOCK = 1 << 20
DOWNLOADING = "downloading the catalogue bundle"
RETRY = "it is not served, and the next start tries again"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects within HTTP(S) only (the standard handler also follows one to FTP)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                req.full_url,
                code,
                f"a redirect to {newurl} was refused (HTTP(S) only)",
                headers,
                fp,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def download(url: str, target: Path, *, limits: BundleLimits, say: ProgressFn) -> None:
    """Write the body at `url` into `target` (see the module docstring)."""
    request = urllib.request.Request(url, headers={"User-Agent": "embeddings-bundle/1"})
    deadline = time.monotonic() + limits.deadline_s
    done = total = 0
    try:
        with (
            _OPENER.open(request, timeout=min(READ_TIMEOUT_S, limits.deadline_s)) as response,
            open(target, "wb") as out,
        ):
            total = response.length or 0  # None: no Content-Length (or a chunked body)
            if total > limits.max_bytes:
                raise BundleError(
                    f"{url} announces {total:,} bytes, more than the bundle size limit "
                    f"{limits.describe()}; it is not downloaded"
                )
            while block := response.read1(BLOCK):
                done += len(block)
                if done > limits.max_bytes:
                    raise BundleError(
                        f"the download of {url} passed the bundle size limit "
                        f"{limits.describe()} and was stopped; {RETRY}"
                    )
                if time.monotonic() > deadline:
                    raise BundleError(
                        f"the download of {url} did not finish within {limits.deadline_s:,.0f} s "
                        f"({done:,} bytes arrived) and was stopped; {RETRY}"
                    )
                out.write(block)
                say(Progress("download", None, done, total, DOWNLOADING, unit="bytes"))
    except BundleError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise BundleError(
            f"downloading the bundle from {url} failed after {done:,} bytes "
            f"({type(exc).__name__}: {exc}); {RETRY}"
        ) from exc
    if total and done != total:
        raise BundleError(f"the download of {url} stopped at {done:,} of {total:,} bytes; {RETRY}")
