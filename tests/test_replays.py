"""Replays of a logged claim are cheap and bounded: a byte-identical envelope gets its
original receipt back without the writer (no second signature check, no store read),
and a flood of replays from one client costs the writer at most one submission while
another client's honest submissions are logged. A real `prov serve` on loopback (IPv4
and IPv6: two clients, each with its own forgery budget), real keys, concurrent gRPC
calls; the writer's work is read from the server's own /metrics."""

from __future__ import annotations

import re
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)

from clients.api import ProvenanceClient
from provenance.core.claims import SignedClaim
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire

#: replays sent at once (the reviewer's flood)
N = 2000
#: honest submissions sent meanwhile from the other client
HONEST = 5


def _start(db: Path) -> tuple[ServerProc, str]:
    """A server on every address with the reviewer's limits (5 forgeries, 10 claims a
    minute), and its metrics URL."""
    limits = ("--forgeries-per-minute", "5", "--quota-claims-per-minute", "10")
    s = start_server(db, *limits, "--listen", "[::]:0", "--metrics-listen", "127.0.0.1:0")
    return s, read_line(s.proc, "metrics on ")


def _on(srv: ServerProc, host: str) -> str:
    return f"{host}:{srv.address.rpartition(':')[2]}"


def _writer_items(url: str) -> int:
    """Submissions the writer has taken into its group commits (the sum of
    prov_commit_batch_size), as the server's /metrics counts them."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    found = re.search(r"^prov_commit_batch_size_sum (\S+)$", text, re.M)
    assert found is not None, text[:2000]
    return int(float(found.group(1)))


def _burst(address: str, claim: SignedClaim, n: int) -> tuple[Counter[str], set[bytes]]:
    """Send ``claim`` ``n`` times at once on two connections from one address; the
    answers' status names (OK split by the duplicate flag) and the distinct receipts
    (serialized) returned. Of 2,000 calls at once, gRPC itself cancels some (4-8% here,
    with or without this change, on one connection or two) before they reach a handler,
    the server's /metrics never counting them: grpc core's limit of requests waiting
    for one (``grpc.server.max_pending_requests``; raised to 10,000 they all arrive)."""
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(2)
    ]
    try:
        stubs = [rpc.CapturesStub(ch) for ch in channels]
        req = pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(claim))
        calls = [stubs[i % 2].SubmitCapture.future(req, timeout=120) for i in range(n)]
        codes: Counter[str] = Counter()
        receipts: set[bytes] = set()
        for call in calls:
            try:
                r = call.result()
            except grpc.RpcError as e:
                codes[e.code().name] += 1
            else:
                codes["duplicate" if r.duplicate else "new"] += 1
                receipts.add(r.receipt.SerializeToString(deterministic=True))
        return codes, receipts
    finally:
        for ch in channels:
            ch.close()


@pytest.mark.slow
def test_a_flood_of_replays_costs_the_writer_at_most_one_submission(tmp_path: Path) -> None:
    server, url = _start(tmp_path / "p.db")
    try:
        with ProvenanceClient(_on(server, "[::1]"), admin_token=ADMIN_TOKEN) as c:
            replayer = enroll_key(c)
            honest = enroll_key(c)
        first = signed_claim(replayer, 1)
        with ProvenanceClient(_on(server, "127.0.0.1")) as c:
            receipt, duplicate = c.submit(first)
            assert not duplicate
            # (1) a replay still gets its receipt, byte for byte
            again, duplicate = c.submit(first)
            assert duplicate and again == receipt
        want = wire.receipt_to_pb(receipt).SerializeToString(deterministic=True)

        # (2) N concurrent replays from 127.0.0.1 while [::1] submits honest claims
        before = _writer_items(url)
        logged: list[tuple[object, bool]] = []

        def submit_honestly() -> None:
            with ProvenanceClient(_on(server, "[::1]")) as h:
                for seq in range(1, HONEST + 1):
                    logged.append(h.submit(signed_claim(honest, seq)))

        t = threading.Thread(target=submit_honestly)
        t.start()
        codes, receipts = _burst(_on(server, "127.0.0.1"), first, N)
        t.join(timeout=120)
        assert not t.is_alive()
        # all answered as replays but those gRPC cancels before any handler (see _burst)
        assert set(codes) <= {"duplicate", "CANCELLED"}, codes
        assert codes["duplicate"] >= N * 0.8, codes
        assert receipts == {want}
        assert [d for _, d in logged] == [False] * HONEST
        # the writer took the honest claims and no replay (before: every replay, each a
        # signature check and a read in the honest claims' batches: N + HONEST)
        assert _writer_items(url) - before == HONEST

        # a new claim sent N times at once (none of it kept yet): logged once, the writer
        # takes it once, every other copy answered with its receipt as a replay
        fresh = signed_claim(replayer, 2)
        before = _writer_items(url)
        codes, receipts = _burst(_on(server, "127.0.0.1"), fresh, N)
        assert set(codes) <= {"new", "duplicate", "CANCELLED"}, codes
        assert codes["new"] == 1 and codes["duplicate"] >= N * 0.8, codes
        assert len(receipts) == 1
        assert _writer_items(url) - before == 1
    finally:
        server.stop()
