"""Forged submissions are metered per client address (`ForgeryPenalty`: an IPv4 address,
an IPv6 /64): past its budget a client's submissions are refused unverified, on every
connection it opens, while other clients' honest submissions are still accepted. A real
`prov serve` on loopback (IPv4 and IPv6), real keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.api import ProvenanceClient
from provenance.core.claims import SignedClaim
from provenance.core.errors import DeadlineError, ForgeryPenaltyError
from provenance.core.keys import DeviceKey
from provenance.server.limits import FORGERY_PEERS_KEPT, ForgeryPenalty, peer_client
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import RETRY_AFTER_KEY
from tests.conftest import ServerProc, enroll_key, sign_claim, signed_claim, start_server


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[ServerProc]:
    # on every address, so that 127.0.0.1 and ::1 are two clients
    srv = start_server(tmp_path / "p.db", "--forgeries-per-minute", "3", "--listen", "[::]:0")
    yield srv
    srv.stop()


def _on(srv: ServerProc, host: str) -> str:
    """The server's address reached through loopback ``host`` (127.0.0.1 or [::1])."""
    return f"{host}:{srv.address.rpartition(':')[2]}"


def _stub(address: str) -> tuple[grpc.Channel, rpc.CapturesStub]:
    # a subchannel pool of its own: a connection of its own, as another client has
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, rpc.CapturesStub(channel)


def _submit(stub: rpc.CapturesStub, signed: SignedClaim) -> grpc.RpcError | None:
    try:
        stub.SubmitCapture(
            pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed)), timeout=30
        )
    except grpc.RpcError as e:
        return e
    return None


@pytest.mark.slow
def test_forger_connection_is_refused_and_others_are_served(strict_server: ServerProc) -> None:
    with ProvenanceClient(
        _on(strict_server, "[::1]"), admin_token="test-admin-token-0123456789"
    ) as c:
        victim = enroll_key(c)
        honest = enroll_key(c)
    forger = DeviceKey.generate()
    forged = [_forge(victim, forger, n) for n in range(1, 6)]
    bad_channel, bad = _stub(_on(strict_server, "127.0.0.1"))
    good_channel, good = _stub(_on(strict_server, "[::1]"))
    try:
        # the budget: each forgery verified and refused as such
        for f in forged[:3]:
            err = _submit(bad, f)
            assert err is not None and err.code() is grpc.StatusCode.UNAUTHENTICATED
        # past it: refused unverified, with when to retry
        err = _submit(bad, forged[3])
        assert err is not None and err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--forgeries-per-minute" in (err.details() or "")
        trailers = {m.key: m.value for m in err.trailing_metadata() or ()}
        assert float(trailers[RETRY_AFTER_KEY]) > 0
        # the penalty is the client's: even a good claim from it waits its turn
        err = _submit(bad, signed_claim(victim, 1))
        assert err is not None and err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # another client is served as before, for the victim device too
        assert _submit(good, signed_claim(honest, 1)) is None
        assert _submit(good, signed_claim(victim, 1)) is None
        err = _submit(good, forged[4])
        assert err is not None and err.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        bad_channel.close()
        good_channel.close()


@pytest.mark.slow
def test_reconnecting_does_not_reset_the_penalty(strict_server: ServerProc) -> None:
    """A forger that opens a new connection (a new port) for every submission has no
    fresh budget: past 3 forgeries its submissions are refused unverified. (Keyed per
    connection, all 12 were verified and refused as forgeries, UNAUTHENTICATED.)"""
    with ProvenanceClient(
        _on(strict_server, "[::1]"), admin_token="test-admin-token-0123456789"
    ) as c:
        victim = enroll_key(c)
    forger = DeviceKey.generate()
    codes = []
    for n in range(1, 13):
        channel, stub = _stub(_on(strict_server, "127.0.0.1"))
        try:
            err = _submit(stub, _forge(victim, forger, n))
        finally:
            channel.close()
        assert err is not None
        codes.append(err.code())
    assert codes[:3] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 9


@pytest.mark.slow
def test_submissions_for_unknown_devices_are_metered_too(strict_server: ServerProc) -> None:
    """Each submission naming a device nobody enrolled costs the server a store read; a
    client drawing new device ids at will is metered like a forger: past 3, refused
    unread. Another client is still answered NOT_FOUND for the same kind of claim."""
    channel, stub = _stub(_on(strict_server, "127.0.0.1"))
    other_channel, other = _stub(_on(strict_server, "[::1]"))
    try:
        codes = []
        for _ in range(6):
            err = _submit(stub, signed_claim(DeviceKey.generate(), 1))
            assert err is not None
            codes.append(err.code())
        assert codes[:3] == [grpc.StatusCode.NOT_FOUND] * 3
        assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        err = _submit(other, signed_claim(DeviceKey.generate(), 1))
        assert err is not None and err.code() is grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
        other_channel.close()


def test_peers_are_counted_per_address() -> None:
    assert peer_client("ipv4:192.0.2.1:5000") == peer_client("ipv4:192.0.2.1:6001") == "192.0.2.1"
    assert peer_client("ipv6:[2001:db8:1:2::7]:5000") == "2001:db8:1:2::/64"
    assert peer_client("ipv6:%5B2001:db8:1:2::8%5D:6000") == "2001:db8:1:2::/64"
    assert peer_client("ipv6:[::ffff:192.0.2.1]:80") == "192.0.2.1"
    assert peer_client("ipv6:[::1]:80") == "::1"
    assert peer_client("unix:/tmp/s") == "unix:/tmp/s"

    async def main() -> None:
        p = ForgeryPenalty(per_minute=1, clock=lambda: 0.0)
        await _forged(p, "ipv6:[2001:db8:1:2::7]:5000")
        with pytest.raises(ForgeryPenaltyError):  # another port, another host of the /64
            await p.admit("ipv6:[2001:db8:1:2::9]:5001")
        await _honest(p, "ipv6:[2001:db8:1:3::7]:5000")  # another /64
        await _honest(p, "ipv4:192.0.2.1:5000")

    asyncio.run(main())


async def _forged(p: ForgeryPenalty, peer: str) -> None:
    """One submission from ``peer`` admitted, then found forged (its token spent)."""
    p.settle(await p.admit(peer), forged=True)


async def _honest(p: ForgeryPenalty, peer: str) -> None:
    """One submission from ``peer`` admitted (raises ForgeryPenaltyError when it is not),
    then found honest (its token given back)."""
    p.settle(await p.admit(peer), forged=False)


def _forge(victim: DeviceKey, forger: DeviceKey, seq: int) -> SignedClaim:
    """A claim naming ``victim``'s device, signed by ``forger``: well formed, canonical S,
    failing only the verification equation."""
    good = signed_claim(victim, seq)
    other = sign_claim(forger, wire.decode_claim(good.claim_bytes))
    return SignedClaim(good.payload_type, good.claim_bytes, good.key_id, other.signature)


def test_penalty_refills() -> None:
    async def main() -> None:
        now = [0.0]
        p = ForgeryPenalty(per_minute=2, clock=lambda: now[0])
        await _honest(p, "ipv4:127.0.0.1:1")  # honest submissions spend nothing
        await _honest(p, "ipv4:127.0.0.1:1")
        await _honest(p, "ipv4:127.0.0.1:1")
        await _forged(p, "ipv4:127.0.0.1:1")
        await _honest(p, "ipv4:127.0.0.1:1")  # one left
        await _forged(p, "ipv4:127.0.0.1:1")
        with pytest.raises(ForgeryPenaltyError) as e:
            await p.admit("ipv4:127.0.0.1:1")
        assert e.value.retry_after_s == pytest.approx(30.0)
        await _honest(p, "ipv4:127.0.0.2:1")  # another client is not charged
        now[0] = 29.0
        with pytest.raises(ForgeryPenaltyError):
            await p.admit("ipv4:127.0.0.1:1")
        now[0] = 31.0
        await _forged(p, "ipv4:127.0.0.1:1")  # refilled one, spent again
        with pytest.raises(ForgeryPenaltyError):
            await p.admit("ipv4:127.0.0.1:1")
        now[0] = 100.0
        await _honest(p, "ipv4:127.0.0.1:1")  # full again

    asyncio.run(main())


def test_penalty_keeps_the_last_clients_charged() -> None:
    """At most FORGERY_PEERS_KEPT clients' counts are kept: the one charged longest ago
    is forgotten (a full budget again), the others are not."""

    async def main() -> None:
        p = ForgeryPenalty(per_minute=1, clock=lambda: 0.0)
        for i in range(FORGERY_PEERS_KEPT + 1):
            await _forged(p, f"ipv4:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:1")
        await _honest(p, "ipv4:10.0.0.0:1")  # the first one charged: forgotten
        with pytest.raises(ForgeryPenaltyError):
            await p.admit("ipv4:10.0.0.1:1")
        last = FORGERY_PEERS_KEPT
        with pytest.raises(ForgeryPenaltyError):
            await p.admit(f"ipv4:10.0.{last >> 8 & 255}.{last & 255}:1")

    asyncio.run(main())


def test_no_limit_when_zero() -> None:
    async def main() -> None:
        p = ForgeryPenalty(per_minute=0)
        assert not p.enabled
        for _ in range(100):
            client = await p.admit("ipv4:127.0.0.1:1")
            assert client is None
            p.settle(client, forged=True)

    asyncio.run(main())


def test_a_wait_for_a_token_that_runs_out_is_no_forgery() -> None:
    """Every token of a client reserved by honest calls still in flight: a call of it
    whose deadline passes while waiting is told so (DeadlineError, DEADLINE_EXCEEDED),
    not refused as a forger (before: ForgeryPenaltyError, 'sent more than 2 submissions
    in a minute whose signatures did not verify'); nothing is charged."""

    async def main() -> None:
        p = ForgeryPenalty(per_minute=2)
        held = [await p.admit("ipv4:192.0.2.1:1"), await p.admit("ipv4:192.0.2.1:2")]
        with pytest.raises(DeadlineError) as e:
            await p.admit("ipv4:192.0.2.1:3", time_left=0.05)
        assert not isinstance(e.value, ForgeryPenaltyError)
        assert "2 submissions" in str(e.value) and "verify" not in str(e.value)
        for client in held:
            p.settle(client, forged=False)
        assert await p.admit("ipv4:192.0.2.1:4", time_left=0.05) == "192.0.2.1"

    asyncio.run(main())


def test_a_wake_up_taken_by_a_cancelled_call_is_passed_on() -> None:
    """A token given back wakes the oldest waiting call; when that call is cancelled
    (its client gone) before it runs, the next waiting call gets the token at once
    (before: it slept until its refill timer, here 30 s)."""

    async def main() -> None:
        p = ForgeryPenalty(per_minute=2)
        held = [await p.admit("ipv4:192.0.2.1:1"), await p.admit("ipv4:192.0.2.1:2")]
        first = asyncio.ensure_future(p.admit("ipv4:192.0.2.1:3"))
        second = asyncio.ensure_future(p.admit("ipv4:192.0.2.1:4"))
        await asyncio.sleep(0.01)  # both wait
        p.settle(held[0], forged=False)  # wakes `first`...
        first.cancel()  # ... which is gone before it runs
        assert await asyncio.wait_for(second, 5) == "192.0.2.1"
        assert first.cancelled()

    asyncio.run(main())
