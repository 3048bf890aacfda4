"""How large a bundle may be, and how long its download may take: one setting.

`EMBEDDINGS_BUNDLE_MAX_GB` (default 4) caps both the bytes a download may bring and the bytes an
archive may unpack (the total `bundle.json` declares). A download must also finish within a
total deadline derived from the cap: 10 minutes plus one second per MB of the cap (77 minutes for
4 GB; an average of 1 MB/s), whatever the server's pace; a single read waits at most 60 s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from embeddings.bundle.manifest import BundleError

MAX_GB_ENV = "EMBEDDINGS_BUNDLE_MAX_GB"
DEFAULT_MAX_GB = 4.0
#: The deadline: this much, plus one second per `MIN_RATE` bytes of the cap.
DEADLINE_BASE_S = 600.0
MIN_RATE = 1_000_000
#: Longest wait for any single network read (a stalled server).
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BundleLimits:
    """The most bytes a bundle may download or unpack, and the download's total deadline."""

    max_bytes: int
    deadline_s: float

    @classmethod
    def from_env(cls) -> BundleLimits:
        """The limits set by `EMBEDDINGS_BUNDLE_MAX_GB` (see the module docstring)."""
        raw = os.environ.get(MAX_GB_ENV, "").strip()
        try:
            gigabytes = float(raw) if raw else DEFAULT_MAX_GB
        except ValueError:
            gigabytes = math.nan
        if not math.isfinite(gigabytes) or gigabytes <= 0:
            raise BundleError(
                f"{MAX_GB_ENV}={raw!r} is not a positive number of gigabytes (e.g. 4 or 0.5)"
            )
        max_bytes = int(gigabytes * 1e9)
        return cls(max_bytes=max_bytes, deadline_s=DEADLINE_BASE_S + max_bytes / MIN_RATE)

    def describe(self) -> str:
        """The cap as people read it, with the setting that changes it."""
        return f"{self.max_bytes / 1e9:,.3g} GB ({MAX_GB_ENV})"
