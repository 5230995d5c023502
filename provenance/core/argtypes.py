"""Argument types of the bench and script command lines (argparse), for numbers a
person types: ASCII digits only, as `provenance.core.ports` reads ports."""

from __future__ import annotations

import argparse


def positive_ints(text: str) -> tuple[int, ...]:
    """``text``, comma-separated whole numbers from 1 ("500,1000"), as a tuple. Raises
    argparse.ArgumentTypeError (argparse then prints usage and exits 2) for anything
    else: `int` alone also reads other scripts' digits ("٥٠٠" is 500), spaces and
    underscores, and raises ValueError (a traceback) for "²", which `str.isdigit` takes."""
    parts = text.split(",")
    if not all(p.isascii() and p.isdigit() and len(p) <= 18 and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not comma-separated whole numbers from 1 in digits 0-9"
            " (e.g. 500,1000)"
        )
    return tuple(int(p) for p in parts)


def positive_int(text: str) -> int:
    """``text``, one whole number from 1 in ASCII digits ("1100"). Raises
    argparse.ArgumentTypeError otherwise, as `positive_ints` does."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a whole number from 1 in digits 0-9 (e.g. 500)"
        )
    return int(text)
