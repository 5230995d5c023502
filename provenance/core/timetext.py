"""Times as people and ISO 8601 read them: a year always in 4 digits. `strftime("%Y")`
writes the year without padding on glibc (year 1 is "1", not "0001"), and a revocation
time may lie that early."""

from __future__ import annotations

from datetime import datetime


def utc_text(dt: datetime) -> str:
    """``dt`` (UTC) as ``YYYY-MM-DD HH:MM:SS UTC``, the year in 4 digits
    ("0001-01-01 05:00:00 UTC")."""
    return f"{dt.year:04d}-{dt:%m-%d %H:%M:%S} UTC"


def utc_iso(dt: datetime, *, micro: bool = True) -> str:
    """``dt`` (UTC) as ISO 8601 / RFC 3339 with ``Z``, the year in 4 digits:
    ``0001-01-01T05:00:00.000000Z`` (``micro``), else without the fraction."""
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}" + (f".{dt:%f}Z" if micro else "Z")
