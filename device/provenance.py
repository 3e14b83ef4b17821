"""What every result says of where it came from: the sha256 of a file and a UTC timestamp, one helper each for
both sides (the host imports them from here; the device side never imports the host)."""

from __future__ import annotations

import datetime as _dt
import hashlib

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # ISO 8601, whole seconds, "Z" for UTC: every *created_utc* / *utc* field


def utc_now() -> str:
    """The current time in UTC as ``2026-12-01T08:12:00Z`` (:data:`UTC_FORMAT`)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime(UTC_FORMAT)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
