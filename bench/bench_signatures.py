"""Ed25519 verification per submission: the strict check as it was and as it is now.

Before: `check_public_key` (pure-Python curve arithmetic) on every call, then OpenSSL.
Now: the key checked once and remembered (`checked_public_key`), then libsodium.
Baseline: bare libsodium crypto_sign_open on the same signatures (the floor).

Usage: python bench/bench_signatures.py [--calls 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from results import Ratio, write_results  # bench/results.py, next to this script

from provenance.core.keys import DeviceKey, check_public_key, verify_strict


def _rates(fns: list[Callable[[int], object]], calls: int, rounds: int = 5) -> list[float]:
    """Calls/s of each fn(i), i in range(calls): rounds alternate between the functions
    (so drifting load hits all alike) and each rate is the median of its rounds."""
    rates: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, rates, strict=True):
            t0 = time.perf_counter()
            for i in range(calls):
                fn(i)
            out.append(calls / (time.perf_counter() - t0))
    return [statistics.median(r) for r in rates]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    keys = [DeviceKey.generate() for _ in range(64)]
    msgs = [b"DSSEv1 claim %d" % i + bytes(200) for i in range(args.calls)]
    sigs = [keys[i % 64].sign(m) for i, m in enumerate(msgs)]

    def before(i: int) -> None:
        pk = keys[i % 64].public_key
        check_public_key(pk)
        Ed25519PublicKey.from_public_bytes(pk).verify(sigs[i], msgs[i])

    def now(i: int) -> None:
        verify_strict(keys[i % 64].public_key, msgs[i], sigs[i])

    def bare(i: int) -> None:
        crypto_sign_open(sigs[i] + msgs[i], keys[i % 64].public_key)

    r_bare, r_before, r_now = _rates([bare, before, now], args.calls)
    write_results(
        "signatures",
        [
            Ratio(
                "verify_strict before (check + OpenSSL)", r_before, "libsodium", r_bare, "calls/s"
            ),
            Ratio(
                "verify_strict now (checked once + sodium)", r_now, "libsodium", r_bare, "calls/s"
            ),
            Ratio("verify_strict now vs before", r_now, "before", r_before, "calls/s"),
        ],
    )


if __name__ == "__main__":
    main()
