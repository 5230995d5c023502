"""The port of a HOST:PORT address, read as a resolver reads it."""

from __future__ import annotations

#: Most digits of a port (65535 has 5).
PORT_DIGITS = 5


def port_number(text: str) -> int | None:
    """``text`` as a port number (0..99999; callers check their own range), or None
    unless it is 1 to 5 ASCII digits. `str.isdigit` alone also takes superscripts ("²",
    which `int` then refuses with a ValueError), other scripts' digits ("٥٠٠٥١", which
    `int` reads as 50051 though no resolver does) and any length (`int` refuses over
    4,300 digits)."""
    if not (text.isascii() and text.isdigit() and len(text) <= PORT_DIGITS):
        return None
    return int(text)
