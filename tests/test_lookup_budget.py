"""A Lookup has a bounded time: the caller's deadline or ``--lookup-seconds``, whichever is
sooner, checked between files; and while the near-duplicate index of a large log is still
being built at start, a Lookup whose perceptual hashes would be scanned linearly for longer
than that is refused UNAVAILABLE ("retry in N s") before any work, while exact Lookups
are answered. Real gRPC server on a loopback port, in-process service.

Before: with 2*10^6 codes still loading, four Lookups of 1,000 photos each ran past
their callers' 2 s deadline and kept the four Lookup threads scanning, so an exact Lookup
with a 5 s deadline failed DEADLINE_EXCEEDED."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.claims import Verdict
from provenance.core.errors import TransportError
from provenance.server.limits import ServerLimits
from provenance.server.rpc import ServerConfig, create_server
from tests.conftest import ADMIN_TOKEN
from tests.inproc import InProc


def _add_random_codes(inproc: InProc, n: int) -> None:
    """``n`` random usable PDQ codes in the service's index (as a log of n photos has)."""
    rng = np.random.default_rng(7)
    words = rng.integers(0, 2**63, size=(n, 4), dtype=np.int64).astype(np.uint64)
    inproc.service.pdq.add_arrays(np.arange(n, dtype=np.int64) + 10**9, words)
    inproc.service.pdq.prepare()


def _photo(ref: str) -> Query:
    """A photo's query: its SHA-256 and its PDQ hash with its 7 rotated/mirrored ones,
    packed."""
    return Query(ref, os.urandom(32), (), "image/jpeg", b"", os.urandom(8 * 32), 90)


def _exact(ref: str) -> Query:
    return Query(ref, os.urandom(32), media_type="application/pdf")


@pytest.fixture
def address(inproc: InProc, request: pytest.FixtureRequest) -> Iterator[str]:
    """A gRPC server over ``inproc`` with the ServerLimits given by indirect param."""
    limits = getattr(request, "param", ServerLimits())
    server, port = create_server(
        "127.0.0.1:0", inproc.service, ServerConfig(admin_token=ADMIN_TOKEN, limits=limits)
    )
    yield f"127.0.0.1:{port}"
    server.stop(None)
    inproc.service.pdq.wait_warm(60)  # leave no table build running into other tests


@pytest.mark.slow
def test_while_the_index_loads_heavy_lookups_are_refused_and_exact_ones_answered(
    inproc: InProc, address: str
) -> None:
    _add_random_codes(inproc, 1 << 21)  # tables built in the background: several seconds
    assert inproc.service.pdq.warming
    heavy = [_photo(f"p{i}") for i in range(1000)]  # 8,000 hashes x 2*10^6 codes scanned
    errors: list[TransportError] = []

    def call() -> None:
        with ProvenanceClient(address, timeout=5) as c, pytest.raises(TransportError) as e:
            c.lookup(heavy)
        errors.append(e.value)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 6
    for e in errors:
        assert e.code == "UNAVAILABLE"
        assert "the near-duplicate index is still loading (2,097,152 perceptual hashes" in str(e)
        assert re.search(r"retry in \d+ s \(Lookups without perceptual hashes", str(e))
        # the same wait, machine-readable, for clients that retry (prov scan's workers)
        assert e.retry_after_s is not None and 0 < e.retry_after_s < 120
    with ProvenanceClient(address, timeout=5) as c:
        [(ref, report)] = c.lookup([_exact("doc")])
        assert (ref, report.status) == ("doc", Verdict.UNSIGNED)
    with ProvenanceClient(address, timeout=60) as c:
        # one photo is still searched: a few seconds of scanning fit the 30 s budget
        [(_, report)] = c.lookup([_photo("one")])
        assert report.status is Verdict.UNSIGNED


@pytest.mark.parametrize("address", [ServerLimits(lookup_s=0.02)], indirect=True)
def test_a_lookup_stops_at_its_time_budget(inproc: InProc, address: str) -> None:
    _add_random_codes(inproc, 50_000)  # tables built at once: each search is quick
    assert not inproc.service.pdq.warming
    with ProvenanceClient(address, timeout=30) as c, pytest.raises(TransportError) as e:
        c.lookup([_photo(f"p{i}") for i in range(1000)])
    assert e.value.code == "DEADLINE_EXCEEDED"
    assert re.search(r"the Lookup ran out of time after answering \d+ of 1000 files", str(e.value))
    assert "(its budget was 0.02 s: the call's deadline or --lookup-seconds" in str(e.value)


def test_lookup_seconds_must_be_positive() -> None:
    from provenance.core.errors import ConfigError

    for bad in (0, -1, 1e10, float("inf")):  # inf would be no deadline at all
        with pytest.raises(ConfigError, match="lookup_s must be more than 0 and at most"):
            ServerLimits(lookup_s=bad)


@pytest.mark.slow
@pytest.mark.parametrize("address", [ServerLimits(lookup_s=300)], indirect=True)
def test_a_scan_lookup_waits_as_long_as_the_server_asks_while_the_index_loads(
    inproc: InProc, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov scan`'s workers follow the server's "retry after" instead of giving up after
    their 1 s and 4 s retries (before: a scan started during a large log's index warm-up
    failed).

    What is tested is the worker, not the machine's speed: the server's wait is an
    estimate of the table build (4 s per 10^6 codes), which a loaded machine overruns
    (3.7 s here idle for 2*10^6 codes, over 13 s with three busy loops on its core); the
    server then asks for 1 s more, and the worker's third and last try came while the
    build still ran (the flake: UNAVAILABLE "retry in 1 s"). So each wait here records
    what the worker asked and lasts until the build is done (not the asked time too: the
    estimate, 8 s here, is about twice the build); and the Lookup, once warm, has 300 s
    (lookup_s and deadline), not 30, for its 8,000 hashes on a loaded machine."""
    from clients.scan import worker

    _add_random_codes(inproc, 1 << 21)
    assert inproc.service.pdq.warming
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert inproc.service.pdq.wait_warm(600)

    monkeypatch.setattr(worker, "time", SimpleNamespace(sleep=sleep))
    heavy = [_photo(f"p{i}") for i in range(1000)]
    with ProvenanceClient(address, timeout=300) as c:
        replies = worker._lookup_retrying(c, heavy)
    assert sorted(replies) == sorted(q.ref for q in heavy)
    assert waits and waits[0] > worker.RETRY_DELAYS_S[0]  # the server's wait, not 1 s


@pytest.mark.slow
@pytest.mark.parametrize("address", [ServerLimits(lookup_s=300)], indirect=True)
def test_a_scan_lookup_keeps_following_retry_after_until_its_cap(
    inproc: InProc, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose index build overruns its own estimate asks again and again; the
    worker follows every "retry after" (before: it gave up on the third answer), and gives
    up only once MAX_INDEX_WAIT_S of waits are spent."""
    from clients.scan import worker

    _add_random_codes(inproc, 1 << 21)
    assert inproc.service.pdq.warming
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the first four waits end at once: still warming
        waits.append(seconds)
        if len(waits) > 4:
            assert inproc.service.pdq.wait_warm(600)

    monkeypatch.setattr(worker, "time", SimpleNamespace(sleep=sleep))
    heavy = [_photo(f"p{i}") for i in range(300)]
    with ProvenanceClient(address, timeout=300) as c:
        monkeypatch.setattr(worker, "MAX_INDEX_WAIT_S", 1e-3)
        with pytest.raises(TransportError) as e:
            worker._lookup_retrying(c, heavy)
        assert e.value.code == "UNAVAILABLE" and e.value.retry_after_s is not None
        # past the cap, only the blind retries are left: one capped wait, then 1 s and 4 s
        assert waits == [1e-3, *worker.RETRY_DELAYS_S]
        waits.clear()
        monkeypatch.setattr(worker, "MAX_INDEX_WAIT_S", 900.0)
        replies = worker._lookup_retrying(c, heavy)
    assert sorted(replies) == sorted(q.ref for q in heavy)
    assert len(waits) == 5 and all(w >= worker.RETRY_DELAYS_S[0] for w in waits)
