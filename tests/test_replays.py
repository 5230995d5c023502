"""Replays of a logged claim are cheap and bounded: a byte-identical envelope gets its
original receipt back without the writer (no second signature check, no store read),
and a flood of replays from one client costs the writer at most one submission while
another client's honest submissions are logged. A real `prov serve` on loopback (IPv4
and IPv6: two clients, each with its own forgery budget), real keys, concurrent gRPC
calls; the writer's work is read from the server's own /metrics."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import urllib.request
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.api import ProvenanceClient
from provenance.core.claims import SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.errors import LimitError, StorageError, TransportError
from provenance.core.keys import DeviceKey
from provenance.server.limits import DeviceQuota, FairReads, ForgeryPenalty, ServerLimits
from provenance.server.rpc import REPLAYS_KEPT, CapturesServicer, envelope_digest
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import (
    ADMIN_TOKEN,
    ServerProc,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
)
from tests.inproc import open_inproc

#: replays sent at once (the reviewer's flood)
N = 2000
#: honest submissions sent meanwhile from the other client
HONEST = 5


#: the reviewer's limits: 5 forgeries, 10 claims a minute
REVIEWER_LIMITS = ("--forgeries-per-minute", "5", "--quota-claims-per-minute", "10")


def _start(db: Path, limits: tuple[str, ...] = REVIEWER_LIMITS) -> tuple[ServerProc, str]:
    """A server on every address with ``limits``, and its metrics URL."""
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


#: devices that log claims before the distinct replays, and claims each logs: more in
#: all than the server keeps envelopes of (REPLAYS_KEPT), so the first ones are not kept
DEVICES = 20
PER_DEVICE = REPLAYS_KEPT // DEVICES + 10
#: distinct logged claims replayed at once
REPLAYED = 100


def _log_chains(address: str, devices: list[DeviceKey]) -> list[tuple[SignedClaim, bytes]]:
    """Log PER_DEVICE claims of each device (the devices at once, each a chain); the
    claims and their receipts (serialized), the first claim of each device first."""
    chains: list[list[tuple[SignedClaim, bytes]]] = [[] for _ in devices]

    def log_chain(i: int) -> None:
        with ProvenanceClient(address) as c:
            for seq in range(1, PER_DEVICE + 1):
                signed = signed_claim(devices[i], seq)
                receipt, duplicate = c.submit(signed)
                assert not duplicate
                pbr = wire.receipt_to_pb(receipt).SerializeToString(deterministic=True)
                chains[i].append((signed, pbr))

    threads = [threading.Thread(target=log_chain, args=(i,)) for i in range(len(devices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [chain[k] for k in range(PER_DEVICE) for chain in chains]


def _replay_all(address: str, claims: list[SignedClaim]) -> list[bytes]:
    """Send each of ``claims`` once, all at once on one connection; the receipts
    (serialized) of the answers in order, each answer a duplicate."""
    with grpc.insecure_channel(address) as ch:
        stub = rpc.CapturesStub(ch)
        calls = [
            stub.SubmitCapture.future(
                pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(c)), timeout=60
            )
            for c in claims
        ]
        answers = [call.result() for call in calls]
    assert all(r.duplicate for r in answers)
    return [r.receipt.SerializeToString(deterministic=True) for r in answers]


@pytest.mark.slow
def test_distinct_replays_of_logged_claims_are_answered_off_the_writer(tmp_path: Path) -> None:
    """The reviewer's flood in small: after more claims than the server keeps envelopes
    of, replays of many distinct logged claims (not kept) get their original receipts
    from a read, the writer taking none of them (before: every one, a signature check and
    reads inside the honest claims' batches); also after a restart, when the server
    learns each device's last logged sequence from its registry row. A reused sequence
    number and a logged claim under a forged signature still reach the writer and are
    refused; a new claim is logged."""
    db = tmp_path / "d.db"
    no_quota = ("--quota-claims-per-minute", "0")
    server, url = _start(db, no_quota)
    try:
        address = _on(server, "127.0.0.1")
        with ProvenanceClient(address, admin_token=ADMIN_TOKEN) as c:
            devices = [enroll_key(c) for _ in range(DEVICES)]
        logged = _log_chains(address, devices)
        before = _writer_items(url)
        got = _replay_all(address, [s for s, _ in logged[:REPLAYED]])
        assert got == [r for _, r in logged[:REPLAYED]]
        assert _writer_items(url) - before == 0
    finally:
        server.stop()

    server, url = _start(db, no_quota)  # nothing in memory: the sequence from the rows
    try:
        address = _on(server, "127.0.0.1")
        before = _writer_items(url)
        again = logged[REPLAYED : 2 * REPLAYED]
        assert _replay_all(address, [s for s, _ in again]) == [r for _, r in again]
        assert _writer_items(url) - before == 0

        device, (first, _) = devices[0], logged[0]
        with ProvenanceClient(address) as c:
            # a new claim reusing a logged number: the writer refuses it
            with pytest.raises(TransportError) as e:
                c.submit(signed_claim(device, 1))
            assert e.value.code == "FAILED_PRECONDITION", e.value
            # a logged claim under another key's signature: no receipt, a forgery
            forged = SignedClaim(
                first.payload_type,
                first.claim_bytes,
                first.key_id,
                sign_payload(DeviceKey.generate(), PAYLOAD_TYPE_CLAIM, first.claim_bytes),
            )
            with pytest.raises(TransportError) as e:
                c.submit(forged)
            assert e.value.code == "UNAUTHENTICATED", e.value
            _, duplicate = c.submit(signed_claim(device, PER_DEVICE + 1))
            assert not duplicate
        assert _writer_items(url) - before == 3
    finally:
        server.stop()


def test_a_device_over_its_quota_still_gets_the_receipt_of_a_logged_claim(
    tmp_path: Path,
) -> None:
    """A device that logged its quota's worth of claims this minute and lost an answer
    retries it against a restarted server (no envelope kept): the replay gets the original
    receipt (before: RESOURCE_EXHAUSTED, "sent more than 3 claims in a minute", though
    nothing is appended); a new claim is still refused by the quota."""
    db = tmp_path / "q.db"
    quota = ("--quota-claims-per-minute", "3")
    server, _ = _start(db, quota)
    try:
        address = _on(server, "127.0.0.1")
        with ProvenanceClient(address, admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
            logged = [signed_claim(device, seq) for seq in (1, 2, 3)]
            receipts = [c.submit(s)[0] for s in logged]
    finally:
        server.stop()
    server, _ = _start(db, quota)
    try:
        with ProvenanceClient(_on(server, "127.0.0.1")) as c:
            receipt, duplicate = c.submit(logged[1])
            assert duplicate and receipt == receipts[1]
            with pytest.raises(TransportError) as e:
                c.submit(signed_claim(device, 4))
            assert e.value.code == "RESOURCE_EXHAUSTED", e.value
            assert "--quota-claims-per-minute" in str(e.value)
    finally:
        server.stop()


#: the order of the Ed25519 group (RFC 8032, section 5.1): S + L verifies under a lax
#: verifier and is refused by a strict one
ED25519_L = 2**252 + 27742317777372353535851937790883648493


def _answer(address: str, envelope: pb.SignedClaim) -> tuple[str, bool, bytes]:
    """One SubmitCapture of ``envelope``: the status name, the duplicate flag and the
    receipt (serialized; empty on an error)."""
    with grpc.insecure_channel(address) as ch:
        req = pb.SubmitCaptureRequest(signed_claim=envelope)
        try:
            r = rpc.CapturesStub(ch).SubmitCapture(req, timeout=30)
        except grpc.RpcError as e:
            return e.code().name, False, b""
    return "OK", r.duplicate, r.receipt.SerializeToString(deterministic=True)


def test_older_replays_get_a_receipt_only_for_the_logged_envelope(tmp_path: Path) -> None:
    """The replay read (no signature check: the envelope must be the logged one byte for
    byte) against a restarted server, nothing kept: the logged claim under its signature
    with S + L (same claim, another encoding) is a forgery; an envelope carrying an
    unknown extra field is the logged one (protobuf drops it) and gets its receipt; a
    number below the last that was never logged (a gap) is refused as not advancing; a
    device revoked since still gets the receipts of what it logged before, but no new
    claim is logged."""
    db = tmp_path / "r.db"
    server, _ = _start(db, ("--quota-claims-per-minute", "0"))
    try:
        with ProvenanceClient(_on(server, "127.0.0.1"), admin_token=ADMIN_TOKEN) as c:
            device = enroll_key(c)
            logged = {seq: signed_claim(device, seq) for seq in (1, 2, 5)}
            receipts = {
                seq: wire.receipt_to_pb(c.submit(s)[0]).SerializeToString(deterministic=True)
                for seq, s in logged.items()
            }
    finally:
        server.stop()
    server, _ = _start(db, ("--quota-claims-per-minute", "0"))
    try:
        address = _on(server, "127.0.0.1")
        first = logged[1]
        s = int.from_bytes(first.signature[32:], "little") + ED25519_L
        assert s < 2**256
        lax = wire.signed_to_pb(first)
        lax.signature = first.signature[:32] + s.to_bytes(32, "little")
        assert _answer(address, lax)[0] == "UNAUTHENTICATED"
        extra = pb.SignedClaim.FromString(
            wire.signed_to_pb(first).SerializeToString() + b"\x7a\x03abc"  # field 15
        )
        assert _answer(address, extra) == ("OK", True, receipts[1])
        assert _answer(address, wire.signed_to_pb(signed_claim(device, 3)))[0] == (
            "FAILED_PRECONDITION"
        )
        with ProvenanceClient(address, admin_token=ADMIN_TOKEN) as c:
            c.revoke(device.key_id, "lost")
        assert _answer(address, wire.signed_to_pb(logged[2])) == ("OK", True, receipts[2])
        assert _answer(address, wire.signed_to_pb(signed_claim(device, 6)))[0] == (
            "PERMISSION_DENIED"
        )
    finally:
        server.stop()


def test_a_replay_read_is_waited_for_at_most_the_submission_timeout(tmp_path: Path) -> None:
    """A replay of a logged claim is answered by a read on the replay thread; like the
    writer's wait, that read is bounded by the submission's timeout (the reviewer: a caller
    without a gRPC deadline waited behind a replay flood without limit). In process: a
    real service on SQLite, a real key; timeout 0 cannot be met by a read in a thread."""
    rig = open_inproc(tmp_path)
    dev = rig.enroll()
    signed = dev.next_claim()
    first = rig.submit(signed)
    with pytest.raises(StorageError, match="already logged claim was not read within 0 s"):
        asyncio.run(rig.service.submit_async(signed, timeout=0))
    again = asyncio.run(rig.service.submit_async(signed, timeout=30))
    assert again.duplicate and again.receipt == first.receipt


#: distinct logged replays one client has waiting to be read in the fairness test
FLOOD = 400


def test_another_clients_replay_is_read_in_its_turn_not_after_a_flood(tmp_path: Path) -> None:
    """Replay reads are taken from each client address in turn (`FairReads`): with FLOOD
    replays of distinct logged claims from one address waiting to be read, a replay from
    another address is read after a few of them (those being read, then its turn), not
    after the whole flood (before: one FIFO reader thread; this order put it last, 401st
    of 401). In process (a real service on SQLite, real keys, one event loop), since over
    gRPC on this 2-core machine the flood's own CPU (about 1 ms a call, client and
    server) delays every call alike and hides the reader's queue; the reviewer's
    PostgreSQL reads, round trips, are where that queue dominated. Order, not time."""
    rig = open_inproc(tmp_path)
    flooder, honest = rig.enroll(), rig.enroll()
    flood = [flooder.next_claim() for _ in range(FLOOD)]
    for signed in flood:
        rig.submit(signed)
    own = honest.next_claim()
    own_receipt = rig.submit(own).receipt
    rig.reopen()  # nothing in memory: every replay is a read
    rig.service.read_device_key(flood[0])
    rig.service.read_device_key(own)
    order: list[str] = []

    async def replay(signed: SignedClaim, peer: str, name: str) -> None:
        got = await rig.service.submit_async(signed, peer=peer)
        assert got.duplicate
        order.append(name)

    async def run() -> None:
        tasks = [asyncio.ensure_future(replay(s, "ipv4:192.0.2.1:4000", "flood")) for s in flood]
        await asyncio.sleep(0)  # every flood replay has its read queued
        tasks.append(asyncio.ensure_future(replay(own, "ipv6:[2001:db8::1]:4000", "own")))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert rig.submit(own).receipt == own_receipt
    assert len(order) == FLOOD + 1
    # read when its turn came: after the flood reads done while the loop was still
    # queueing the flood (about 30 here), not after all FLOOD of them
    assert order.index("own") < FLOOD // 4, order.index("own")


class _Held:
    """Reads for `FairReads` tests: ``hold`` keeps its worker busy until ``gate`` is set
    (``started`` once inside), ``read`` notes its name in ``ran``."""

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()
        self.ran: list[str] = []

    def hold(self) -> None:
        self.started.set()
        self.gate.wait(60)

    def read(self, name: str) -> str:
        self.ran.append(name)
        return name

    async def held(self, reads: FairReads) -> asyncio.Future[None]:
        """A first read holding the (one) worker of ``reads``, once it is inside it."""
        held = asyncio.ensure_future(reads.run("ipv4:192.0.2.9:1", self.hold))
        while not self.started.is_set():
            await asyncio.sleep(0.01)
        return held


def test_fair_reads_take_each_client_in_turn_and_bound_its_queue() -> None:
    """`FairReads` with one worker held by a first read: one client queues 50 reads,
    another 2, a third 1; once released they run in turns (A, B, C, A, B, A, A, ...), not
    in arrival order. A client past its queue bound is refused at once (LimitError, the
    address named), and a caller that gives up leaves the queue (its read never runs).
    Its thread starts with the first read and ends with `FairReads.close`."""
    reads = FairReads(1, "test-reads", per_client=50, in_all=1000)

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("test-reads")]

    assert workers() == []  # none before the first read (a failed start leaves none)
    h = _Held()
    ran, read, gate = h.ran, h.read, h.gate

    async def run() -> None:
        held = await h.held(reads)  # the worker is inside the held read
        a = [
            asyncio.ensure_future(reads.run(f"ipv4:192.0.2.1:{port}", functools.partial(read, "A")))
            for port in range(50)  # many connections of one address: one client
        ]
        b = [
            asyncio.ensure_future(reads.run("ipv6:[2001:db8::1]:9", lambda: read("B")))
            for _ in range(2)
        ]
        c = asyncio.ensure_future(reads.run("ipv4:198.51.100.7:5", lambda: read("C")))
        gone = asyncio.ensure_future(reads.run("ipv4:198.51.100.8:5", lambda: read("gone")))
        await asyncio.sleep(0)
        with pytest.raises(LimitError, match="per address"):
            await reads.run("ipv4:192.0.2.1:999", lambda: read("A"))
        gone.cancel()
        await asyncio.wait([gone])  # it has left the queue
        gate.set()
        await asyncio.gather(held, *a, *b, c)

    try:
        asyncio.run(run())
    finally:
        reads.close()
    assert workers() == []
    assert ran[:6] == ["A", "B", "C", "A", "B", "A"], ran[:8]
    assert ran.count("A") == 50 and "gone" not in ran


def test_fair_reads_full_queue_drops_the_longest_queues_read_not_a_new_clients() -> None:
    """With every queued slot taken by two flooding addresses (``in_all`` reads waiting,
    each at its own bound), a third address's read is still queued and read: the newest
    read of the longest queue makes room (its caller refused with LimitError) instead of
    the newcomer (before: LimitError for every other client while the flood held the
    queue, so 16 addresses, an IPv6 /60, shut every honest device's replay out). A client
    already holding as many as the longest queue is refused as before."""
    reads = FairReads(1, "test-full", per_client=4, in_all=8)
    h = _Held()
    ran, read, gate = h.ran, h.read, h.gate

    async def run() -> None:
        held = await h.held(reads)
        flood = [
            asyncio.ensure_future(
                reads.run(f"ipv6:[2001:db8:0:{net}::1]:{i}", functools.partial(read, str(net)))
            )
            for net in (1, 2)
            for i in range(4)
        ]
        await asyncio.sleep(0)  # all 8 queued: the bound of all clients together
        honest = asyncio.ensure_future(reads.run("ipv4:198.51.100.7:5", lambda: read("honest")))
        # the longest queue's newest read made room: refused, its read never runs
        await asyncio.wait(flood, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        dropped = [f for f in flood if f.done()]
        assert len(dropped) == 1
        with pytest.raises(LimitError, match="most"):
            dropped[0].result()
        # the newcomer now holds 1, the longest 4: a second newcomer takes another slot,
        # but a flooder at the longest queue's length is refused at once
        with pytest.raises(LimitError):
            await reads.run("ipv6:[2001:db8:0:2::1]:99", lambda: read("2"))
        gate.set()
        assert await honest == "honest"
        await asyncio.gather(held, *(f for f in flood if f is not dropped[0]))

    try:
        asyncio.run(run())
    finally:
        gate.set()
        reads.close()
    assert "honest" in ran and len(ran) == 8


def test_a_flood_of_distinct_replays_does_not_evict_the_receipts_of_new_claims(
    tmp_path: Path,
) -> None:
    """The servicer's kept receipts (`CapturesServicer`, on a real service over SQLite,
    real keys): an honest device's claim just logged stays kept (its retry answered at
    once, without a read) while one client replays more than REPLAYS_KEPT distinct
    logged envelopes, each answered from a read and kept apart, its own bounded room
    (before: one room of REPLAYS_KEPT, which the flood's answers filled, evicting the
    honest receipt, so every honest retry became a store read waiting its turn)."""
    rig = open_inproc(tmp_path)
    flooder, honest = rig.enroll(), rig.enroll()
    flood = [flooder.next_claim() for _ in range(REPLAYS_KEPT + 10)]

    async def log_all() -> None:
        await asyncio.gather(*(rig.service.submit_async(s) for s in flood))

    asyncio.run(log_all())
    pool = futures.ThreadPoolExecutor(2)
    quota = DeviceQuota(ServerLimits(quota_claims_per_minute=0), rig.service.store)
    servicer = CapturesServicer(rig.service, quota, pool, ForgeryPenalty(0))

    def request(signed: SignedClaim) -> pb.SubmitCaptureRequest:
        return pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed))

    own = honest.next_claim()

    async def run() -> tuple[Any, list[Any], bool, Any]:
        first = await servicer._submit(request(own), "ipv4:198.51.100.7:5")
        replies = [await servicer._submit(request(s), "ipv4:192.0.2.1:9") for s in flood]
        kept = envelope_digest(own) in servicer._replays
        return first, replies, kept, await servicer._submit(request(own), "ipv4:198.51.100.7:5")

    try:
        first, replies, kept, again = asyncio.run(run())
    finally:
        pool.shutdown()
        quota.close()
        rig.service.close()
    assert not first.duplicate and all(r.duplicate for r in replies)
    assert kept  # after the flood, before its retry
    assert again.duplicate and again.receipt == first.receipt
