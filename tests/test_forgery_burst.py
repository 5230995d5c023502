"""The forgery penalty caps the first burst: its token is taken before the signature
check (or the store read of an unknown device) is paid for, so 1,000 forged submissions
in flight at once from one client cost at most its budget in verifications, counted by
the server's own metrics; an honest burst larger than the budget is still served (its
calls wait for tokens given back, they are not refused). A real `prov serve` on
loopback (IPv4 and IPv6: two clients), real keys, concurrent gRPC calls."""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest

from clients.api import ProvenanceClient
from provenance.core.claims import SignedClaim
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    read_line,
    sign_claim,
    signed_claim,
    start_server,
)

BUDGET = 5
#: forged submissions sent at once
N = 1000


def _start(db: Path) -> tuple[ServerProc, str]:
    """A server on every address (127.0.0.1 and ::1 are two clients) with a budget of
    BUDGET forgeries a minute, and its metrics URL."""
    s = start_server(
        db,
        "--forgeries-per-minute",
        str(BUDGET),
        "--listen",
        "[::]:0",
        "--metrics-listen",
        "127.0.0.1:0",
    )
    return s, read_line(s.proc, "metrics on ")


def _on(srv: ServerProc, host: str) -> str:
    return f"{host}:{srv.address.rpartition(':')[2]}"


def _answered(url: str) -> Counter[str]:
    """SubmitCapture calls answered, by gRPC status, as the server's /metrics counts them."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    counts: Counter[str] = Counter()
    for labels, value in re.findall(r"^prov_rpc_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if 'rpc="SubmitCapture"' in labels:
            code = re.search(r'code="([A-Z_]+)"', labels)
            assert code is not None
            counts[code.group(1)] += int(float(value))
    return counts


def _burst(address: str, claims: list[SignedClaim]) -> Counter[str]:
    """Send every claim at once on one connection; the answers' status names."""
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        stub = rpc.CapturesStub(channel)
        calls = [
            stub.SubmitCapture.future(
                pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(c)), timeout=120
            )
            for c in claims
        ]
        codes: Counter[str] = Counter()
        for call in calls:
            try:
                call.result()
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
        return codes
    finally:
        channel.close()


def _size(client: ProvenanceClient) -> int:
    """The log's size in its current checkpoint (C2SP signed note: origin, size, root)."""
    return int(client.checkpoint().splitlines()[1])


def _forge(victim: DeviceKey, forger: DeviceKey, seq: int) -> SignedClaim:
    """A claim naming ``victim``'s device, signed by ``forger``: well formed, failing only
    the verification equation."""
    good = signed_claim(victim, seq)
    other = sign_claim(forger, wire.decode_claim(good.claim_bytes))
    return SignedClaim(good.payload_type, good.claim_bytes, good.key_id, other.signature)


@pytest.mark.slow
def test_a_burst_of_forgeries_costs_at_most_the_budget_in_verifications(tmp_path: Path) -> None:
    forger = DeviceKey.generate()
    # three servers, two clients each (IPv4 and IPv6 loopback), one burst per client:
    # every burst is held to its client's budget, however many arrive before a batch
    for run in range(3):
        server, url = _start(tmp_path / f"p{run}.db")
        try:
            with ProvenanceClient(_on(server, "[::1]"), admin_token=ADMIN_TOKEN) as c:
                victim = enroll_key(c)
            for n, host in enumerate(("127.0.0.1", "[::1]")):
                forged = [_forge(victim, forger, n * N + i) for i in range(1, N + 1)]
                before = _answered(url)
                codes = _burst(_on(server, host), forged)
                after = _answered(url)
                for _ in range(300):  # a call is counted just after its answer is sent
                    if after.total() - before.total() >= N:
                        break
                    time.sleep(0.1)
                    after = _answered(url)
                verified = after["UNAUTHENTICATED"] - before["UNAUTHENTICATED"]
                # at most the budget checked and refused as forgeries, the rest refused
                # unverified (before: every one that arrived before the first batch was
                # verified: 6-33 of 1,000 at once here, on an idle machine)
                assert 1 <= verified <= BUDGET, (run, host, codes, after)
                assert codes == {"UNAUTHENTICATED": verified, "RESOURCE_EXHAUSTED": N - verified}
        finally:
            server.stop()


@pytest.mark.slow
def test_an_honest_burst_larger_than_the_budget_is_served(tmp_path: Path) -> None:
    """Four times the budget of honest submissions at once from one client: each waits
    for a token another gives back, none is refused."""
    server, _ = _start(tmp_path / "p.db")
    try:
        with ProvenanceClient(_on(server, "[::1]"), admin_token=ADMIN_TOKEN) as c:
            honest = [enroll_key(c) for _ in range(4 * BUDGET)]
        codes = _burst(_on(server, "127.0.0.1"), [signed_claim(k, 1) for k in honest])
        assert codes == {"OK": 4 * BUDGET}, codes
    finally:
        server.stop()


#: How a submission held up past its deadline ends: answered UNAVAILABLE just before it
#: ("the log did not confirm the submission"), or its deadline passing while it waited.
WAITED_OUT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.slow
def test_honest_submissions_whose_callers_gave_up_spend_no_forgery_token(tmp_path: Path) -> None:
    """Honest submissions whose callers give up while the log's commit is held up (a
    real SQLite connection holds the database's write lock, as a backup tool might):
    the callers see UNAVAILABLE or DEADLINE_EXCEEDED, the server logs them once the lock is released,
    and their tokens come back, so the client is not refused as a forger afterwards
    (before: every call that ended before its outcome spent a token, and the next honest
    call met RESOURCE_EXHAUSTED, 'sent more than 5 submissions in a minute whose
    signatures did not verify'). The calls waiting behind them for a token are told the
    deadline passed, not that they forged anything, or are let in once the writer has
    checked the first ones' signatures (their tokens given back then, not when the
    database answers)."""
    db = tmp_path / "p.db"
    server, metrics = _start(db)
    try:
        with ProvenanceClient(_on(server, "[::1]"), admin_token=ADMIN_TOKEN) as c:
            honest = [enroll_key(c) for _ in range(2 * BUDGET + 1)]
        warm = honest.pop()
        claims = [signed_claim(k, 1) for k in honest]
        address = _on(server, "127.0.0.1")
        blocker = sqlite3.connect(db, isolation_level=None)
        channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stub = rpc.CapturesStub(channel)
            # the connection made, and a store read of the size, before the stall
            stub.SubmitCapture(
                pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed_claim(warm, 1))),
                timeout=30,
            )
            with ProvenanceClient(address) as c:
                size = _size(c)
            blocker.execute("BEGIN IMMEDIATE")  # the writer's commit waits for this
            calls = [
                stub.SubmitCapture.future(
                    pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(c)), timeout=3.0
                )
                for c in claims
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as e:
                    call.result()
                # the admitted are answered just before their deadline that the log did
                # not confirm them; those waiting for a token see the deadline pass
                assert e.value.code() in WAITED_OUT, e.value
                assert "did not verify" not in (e.value.details() or "")
        finally:
            channel.close()
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
        with ProvenanceClient(address) as c:
            # the BUDGET admitted first are logged once the lock goes, and those admitted
            # once the writer had checked their signatures (their tokens given back then);
            # none is refused as a forgery
            for _ in range(300):
                if _size(c) >= size + BUDGET:
                    break
                time.sleep(0.1)
            assert _size(c) >= size + BUDGET
            # the server's metrics name how the ten calls ended (before: UNKNOWN)
            answered = _answered(metrics)
            assert sum(answered.get(c.name, 0) for c in WAITED_OUT) == 2 * BUDGET, answered
            logged = [c.submit(claim)[1] for claim in claims]
            assert logged.count(True) >= BUDGET, logged  # each admitted: a replay now
            assert _size(c) == size + 2 * BUDGET
            assert c.submit(signed_claim(honest[0], 2))[1] is False
    finally:
        server.stop()
