"""`prov web`'s log monitor and the cosigned checkpoint it shows.

The cosigned checkpoint `/api/v1/checkpoint` and `/log` show is signed by the log key
too: it is held to the checkpoint the page remembers (`provenance.web.logmonitor`), so
another tree at the remembered size, or a smaller one the service's consistency proof
does not tie to it, is a fork (502); an honest one is proven once. And many requests at
once on a cold cosigned cache ask the service for it once (single flight), a request
waiting for another's answer held no longer than one --service-timeout. A real `prov
serve`, a real gRPC relay on a real port in front of it, a real `prov web`; no mocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from clients.api import ProvenanceClient
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.v1 import provenance_pb2 as pb
from provenance.web import logviews
from tests.conftest import Cli, RelayAnswer, ServerProc, relay, sign_sample
from tests.test_web_cited import _web
from tests.test_web_log_monitor import _said, _signed_over, counted_proofs, forger

_GET_LOG_KEY = "/provenance.v1.Log/GetLogKey"
_GET_CHECKPOINT = "/provenance.v1.Log/GetCheckpoint"
_GET_CONSISTENCY = "/provenance.v1.Log/GetConsistencyProof"

#: `prov web --service-timeout` of the stalled cosigned read: long enough that every
#: request of the burst comes while the first one's call is in flight.
_STALL_TIMEOUT_S = 10.0

#: Requests sent at once to a web whose cosigned cache is cold.
_AT_ONCE = 20


def test_a_cosigned_checkpoint_forking_the_log_is_refused_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A relay presenting a log key of its own signs the real tree of 3 entries as the
    latest, and as the cosigned checkpoint, in turn: another tree of 3 (a fork at the
    size the page holds), a tree of 2 that is not the real log's first 2 (the service's
    consistency proof from 2 to 3 does not verify against it), then the real tree of 2.
    Before 7 December the first two were 200, the forked cosigned checkpoint shown
    beside the latest (only one larger than the latest was refused); now each is a 502
    in logmonitor's words, without the relay's address. The honest one is 200, proven
    once (one consistency proof from 2 to 3) however many views show it."""
    real, fake, signer, origin = forger(enrolled, server, tmp_path)
    latest = _signed_over(signer, origin, real)
    cosigned = {
        "same": _signed_over(signer, origin, [real[0], real[1], fake[0]]),
        "smaller": _signed_over(signer, origin, [real[0], fake[1]]),
        "honest": _signed_over(signer, origin, real[:2]),
    }
    mode = {"now": "same"}
    asked, counted = counted_proofs()

    answers = _forged(signer, origin, latest, lambda: cosigned[mode["now"]])
    answers[_GET_CONSISTENCY] = counted
    with relay(server.address, answers) as address:
        for now, words in [
            ("same", "showed two different logs of 3 entries: a cosigned checkpoint whose"),
            ("smaller", "showed a cosigned checkpoint of 2 entries that it did not prove"),
        ]:
            mode["now"] = now
            # a web of its own: one keeps the cosigned checkpoint it read a while
            # (logviews.COSIGNED_KEEP_S)
            with _web(address) as http:
                for path in ("/api/v1/checkpoint", "/log"):
                    r = http.get(path)
                    assert r.status_code == 502, (now, path, r.status_code, r.text[:300])
                    said = _said(r)
                    assert words in said and "a fork" in said, (now, said)
                    assert address not in said and "127.0.0.1" not in said, said
        mode["now"] = "honest"
        asked.clear()  # no page is asking now: the first web has stopped
        with _web(address) as http:
            for path in ["/api/v1/checkpoint", "/log"] * 2:
                r = http.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            view = http.get("/api/v1/checkpoint").json()
            assert view["size"] == 3 and view["cosigned"]["size"] == 2, view
        assert asked == [(2, 3)], asked


def _cold_burst(address: str, *web_args: str) -> list[httpx.Response]:
    """``_AT_ONCE`` GET /api/v1/checkpoint at once to a new `prov web` in front of
    ``address`` (its cosigned cache cold), their answers."""
    with _web(address, *web_args) as http:
        with ThreadPoolExecutor(_AT_ONCE) as pool:
            return list(pool.map(lambda _: http.get("/api/v1/checkpoint"), range(_AT_ONCE)))


class _CosignedCalls:
    """A relay's GetCheckpoint answer (`relay`) counting the cosigned calls: each is
    forwarded once a second one is in flight or ``hold`` has passed (so that calls at
    once overlap when they come, never needed to pass); the plain ones forwarded at
    once. ``stall``: the cosigned calls are not answered until `release` (their caller
    gives up first)."""

    def __init__(self, hold: float, stall: bool = False) -> None:
        self.hold, self.stall = hold, stall
        self.lock = threading.Lock()
        self.calls = self.in_flight = self.most_in_flight = 0
        self.crowd, self.released = threading.Event(), threading.Event()

    def __call__(self, request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not pb.GetCheckpointRequest.FromString(request).cosigned:
            return forward(request)
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            if self.in_flight > 1:
                self.crowd.set()
        try:
            if self.stall:
                self.released.wait(120)
            else:
                self.crowd.wait(self.hold)
            return forward(request)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_requests_at_once_on_a_cold_cosigned_cache_ask_the_service_once(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """20 `/api/v1/checkpoint` at once to a new web, through a relay counting the
    service's cosigned GetCheckpoint calls and holding each until another comes (or 3 s):
    all 200, one cosigned call in flight at a time, and as many calls in all as
    `test_views_of_the_checkpoint_ask_the_cosigned_one_once_a_while` allows (1 + the
    whole `logviews.COSIGNED_KEEP_S` periods the burst took). Before 7 December each
    request on the cold cache asked it itself: 20 calls, several in flight at once."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    calls = _CosignedCalls(hold=3.0)
    with relay(server.address, {_GET_CHECKPOINT: calls}) as address:
        began = time.monotonic()
        answers = _cold_burst(address)
        took = time.monotonic() - began
    assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers]
    most = 1 + int(took // logviews.COSIGNED_KEEP_S)
    said = (calls.calls, calls.most_in_flight, took)
    assert calls.most_in_flight == 1 and calls.calls <= most, said


def test_requests_waiting_for_a_stalled_cosigned_read_get_one_timeout(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The service never answers the cosigned checkpoint: 20 requests at once to a new
    web with --service-timeout 10 are each a 504 (the one that asked, its call's deadline;
    the others, waiting for its answer, theirs: one timeout, not one more of their own
    after it), and the service was asked once. Before 7 December: 20 calls."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    calls = _CosignedCalls(hold=0.0, stall=True)
    with relay(server.address, {_GET_CHECKPOINT: calls}) as address:
        try:
            answers = _cold_burst(address, "--service-timeout", f"{_STALL_TIMEOUT_S:g}")
        finally:
            calls.released.set()  # before the relay stops: it waits for its calls
    assert all(r.status_code == 504 for r in answers), [r.text[:200] for r in answers]
    assert calls.calls == 1, (calls.calls, calls.most_in_flight)


def _forged(
    signer: LogSigner, origin: str, latest: bytes, cosigned: Callable[[], bytes]
) -> dict[str, RelayAnswer]:
    """A relay's answers presenting ``signer``'s key as the log's (GetLogKey), ``latest``
    (a GetCheckpoint answer) as the latest checkpoint and the note of ``cosigned()``'s as
    the cosigned one, quorum 1."""

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=signer.verifier_key(), origin=origin)
        return bytes(answer.SerializeToString())

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not pb.GetCheckpointRequest.FromString(request).cosigned:
            return latest
        note = pb.GetCheckpointResponse.FromString(cosigned()).checkpoint
        return bytes(pb.GetCheckpointResponse(checkpoint=note, quorum=1).SerializeToString())

    return {_GET_LOG_KEY: log_key, _GET_CHECKPOINT: checkpoint}


def test_a_cosigned_checkpoint_seen_again_after_a_newer_one_is_not_proven_again(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Views read the cosigned checkpoint as they start and hold it after reading the
    latest: one that read the cosigned tree of 1 before the service's cosigned one became
    the tree of 2 may hold it after a view that read 2 (2 then 1, then 2 again for later
    views). Each is proven part of the log of 3 once (the tree of 3 itself, none): views
    of the real `prov web` code on a real client, through a relay counting the
    consistency proofs asked. Before,
    the page remembered only the last cosigned checkpoint proven: 1, 2, 1, 2, 3, 1 asked
    5 proofs, [(1, 3), (2, 3), (1, 3), (2, 3), (1, 3)]."""
    real, _, signer, origin = forger(enrolled, server, tmp_path)
    notes = [
        pb.GetCheckpointResponse.FromString(_signed_over(signer, origin, real[:n])).checkpoint
        for n in (1, 2, 3)
    ]
    asked, counted = counted_proofs()

    whole = _signed_over(signer, origin, real)
    answers = _forged(signer, origin, whole, lambda: whole)  # the cosigned not asked
    answers[_GET_CONSISTENCY] = counted
    with relay(server.address, answers) as address, ProvenanceClient(address, timeout=60) as c:
        latest, _, vkey = logviews.latest_checkpoint(c)
        assert latest.size == 3
        for size in (1, 2, 1, 2, 3, 1):
            view = logviews.cosigned_view(c, (notes[size - 1], 1), vkey, latest)
            assert view is not None and view["size"] == size, view
    assert asked == [(1, 3), (2, 3)], asked


def test_a_cosigned_checkpoint_of_0_entries_must_be_the_empty_tree(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The relay's log key signs a cosigned checkpoint of 0 entries: the empty tree's
    root (SHA-256 of nothing) is 200, shown as of size 0; another root is no tree a log
    of 0 entries has: a 502 in logmonitor's words, without the relay's address. Before,
    200: a checkpoint of 0 entries is part of every log, so nothing was checked."""
    real, _, signer, origin = forger(enrolled, server, tmp_path)
    when = datetime.now(UTC).replace(microsecond=0)
    empty = {
        "honest": _signed_over(signer, origin, []),
        "other": bytes(
            pb.GetCheckpointResponse(
                checkpoint=signer.sign(Checkpoint(origin, 0, b"\x07" * 32, when))
            ).SerializeToString()
        ),
    }
    mode = {"now": "other"}
    latest = _signed_over(signer, origin, real)
    answers = _forged(signer, origin, latest, lambda: empty[mode["now"]])
    with relay(server.address, answers) as address:
        with _web(address) as http:
            for path in ("/api/v1/checkpoint", "/log"):
                r = http.get(path)
                assert r.status_code == 502, (path, r.status_code, r.text[:300])
                said = _said(r)
                assert "showed a cosigned checkpoint of 0 entries whose root hash is 0707" in said
                assert "not the empty tree's" in said and "a fork" in said, said
                assert address not in said and "127.0.0.1" not in said, said
        mode["now"] = "honest"
        with _web(address) as http:
            for path in ("/api/v1/checkpoint", "/log"):
                r = http.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            assert http.get("/api/v1/checkpoint").json()["cosigned"]["size"] == 0
