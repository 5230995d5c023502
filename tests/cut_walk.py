"""A child program for tests/test_c2pa_walk_cut_short.py: walks a file as the C2PA
reader's bound does, pausing in the middle of the walk until told to go on, so that the
test can cut the file short while it is being walked.

Usage: python -m tests.cut_walk HOW PATH MEDIA_TYPE PAUSE_AT. HOW is ``read_c2pa`` (the
product: `provenance.c2pa.reader.read_c2pa` on the path) or ``mapped`` (the walk before
walk54: `reader_walk_problem` over an ``mmap`` of the file). At the PAUSE_AT-th read of a
header (a call of `provenance.c2pa.container._unpack_from`), it prints ``walking``,
then reads a line from stdin before going on. It prints one JSON line: {"problem": ...}
(the result's ``error_kind`` and ``error`` for ``read_c2pa``), or {"error": class name,
"message": str(e), "public": e.public} for a ProvenanceError. A SIGBUS kills it (-7)."""

from __future__ import annotations

import json
import mmap
import sys
from types import FrameType
from typing import Any, cast

from provenance.c2pa import container
from provenance.c2pa.reader import read_c2pa
from provenance.core.errors import ProvenanceError


def main(argv: list[str]) -> int:
    how, path, media_type, pause_at = argv[0], argv[1], argv[2], int(argv[3])
    header_reads = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal header_reads
        if event == "call" and frame.f_code is container._unpack_from.__code__:
            header_reads += 1
            if header_reads == pause_at:
                sys.setprofile(None)
                print("walking", flush=True)
                sys.stdin.readline()  # the test has cut the file

    sys.setprofile(profile)
    try:
        if how == "mapped":
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                walked = cast(bytes, m)  # a mapping reads as bytes (no longer a walk's type)
                said: dict[str, Any] = {
                    "problem": container.reader_walk_problem(walked, media_type)
                }
        else:
            result = read_c2pa(path, media_type)
            said = {"problem": [result.error_kind, result.error]}
    except ProvenanceError as e:
        said = {"error": type(e).__name__, "message": str(e), "public": e.public}
    finally:
        sys.setprofile(None)
    print(json.dumps(said), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
