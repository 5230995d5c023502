"""Run one fuzz target under atheris (libFuzzer): python -m tests.fuzz.harness NAME [libFuzzer args].

Our packages (and the archive modules of the standard library) are instrumented for
coverage; the arguments after NAME go to libFuzzer (corpus folders, -max_total_time=S,
-runs=N, ...). An exception other than a `ProvenanceError` stops the run and writes the
input to the -artifact_prefix folder.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(
    include=["provenance", "clients", "zipfile", "tarfile", "gzip", "bz2", "lzma", "json"]
):
    from tests.fuzz.targets import TARGETS, run_target


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: harness.py {{{','.join(TARGETS)}}} [libFuzzer arguments]")
    name = sys.argv[1]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], lambda data: run_target(name, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
