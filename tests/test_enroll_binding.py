"""A certificate enrollment is bound to the log it was made for and to its time: the
device signs (the log's verifier key, the time) instead of an empty token, so a request
recorded on its way to server A and replayed to server B, which trusts the same
enrollment authority, is refused, and so is one older than `ENROLL_SKEW`. Before, the
proof of possession was a signature over an empty token, the same for every server and
every time: the replay to B enrolled the key there. Real `prov serve` processes, the real
CLI, a recording gRPC relay in between (which can also lose an answer: a token or
certificate enrollment retried after its answer was lost is answered as the first was)."""

from __future__ import annotations

import sqlite3
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.device import DeviceHome
from provenance.c2pa.authority import init_authority
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import EnrollmentError, TransportError
from provenance.core.keys import DeviceKey
from provenance.core.registry import (
    ENROLL_SKEW,
    certificate_enrollment_proof,
    check_certificate_enrollment,
)
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from provenance.wire.contract import RETRY_AFTER_KEY
from tests.conftest import ADMIN_TOKEN, PASSPHRASE, certified_device, start_server

ENROLL = "/provenance.v1.DeviceRegistry/Enroll"


class Relay(grpc.GenericRpcHandler):
    """Forwards every unary call to ``target`` as raw bytes, recording each request."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.seen: list[tuple[str, bytes]] = []
        self.answers: list[tuple[str, bytes]] = []
        #: methods whose answer is recorded, then lost: the caller gets UNAVAILABLE
        self.drop: set[str] = set()

    def service(self, details: Any) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = str(details.method)
        forward: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.seen.append((method, request))
            try:
                answer = bytes(forward(request, timeout=30))
                self.answers.append((method, answer))
                if method in self.drop:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the relay lost the answer")
                return answer
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")
                raise

        return grpc.unary_unary_rpc_method_handler(handle)


def _relay(target: str) -> tuple[grpc.Server, Relay, str]:
    relay = Relay(target)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[relay])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, relay, f"127.0.0.1:{port}"


def test_a_request_recorded_for_server_a_is_refused_by_server_b(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    a = start_server(tmp_path / "a.db", "--ca", str(tmp_path / "ca"))
    b = start_server(tmp_path / "b.db", "--ca", str(tmp_path / "ca"))
    relay_server, relay, via = _relay(a.address)
    try:
        home, state, chain = certified_device(tmp_path, tmp_path / "ca")
        monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
        args = ["--certificate", str(tmp_path / "chain.pem"), "--server", via]
        rc = prov_main(["device", "enroll", "--home", str(home.root), *args])
        out = capsys.readouterr().out
        assert rc == 0 and f"device {state.device_id} enrolled" in out, out
        recorded = [request for method, request in relay.seen if method == ENROLL]
        assert len(recorded) == 1
        with grpc.insecure_channel(b.address) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                replay: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ENROLL)
                replay(recorded[0], timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        said = refused.value.details() or ""
        assert "made for another log" in said, said
    finally:
        relay_server.stop(None)
        a.stop()
        b.stop()


def test_a_stale_or_misdirected_proof_is_refused() -> None:
    """The pure check: the right log and a time within `ENROLL_SKEW` pass; another log,
    a time out of the window either way, or a proof over other bytes fail, each saying
    which."""
    key = DeviceKey.generate()
    ours = "example.org/log+01234567+AQID"
    theirs = "example.org/other+89abcdef+AQID"
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def proof(log: str, at: datetime) -> bytes:
        return certificate_enrollment_proof(key, log, at)

    assert check_certificate_enrollment(key.public_key, ours, now, proof(ours, now), ours, now)
    late = now - ENROLL_SKEW - timedelta(seconds=1)
    cases = [
        (theirs, now, proof(theirs, now), "made for another log"),
        (ours, late, proof(ours, late), "signed at"),
        (ours, now + ENROLL_SKEW * 2, proof(ours, now + ENROLL_SKEW * 2), "signed at"),
        (ours, now, proof(ours, now - timedelta(seconds=1)), "does not verify"),
        ("", now, proof(ours, now), "names no log"),
    ]
    for log, at, pop, words in cases:
        with pytest.raises(EnrollmentError, match=words):
            check_certificate_enrollment(key.public_key, log, at, pop, ours, now)


def _rows(db: Path) -> tuple[int, int, int]:
    """(devices, key events, leaves) in the server's SQLite database."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        devices, events, leaves = (
            int(c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("devices", "key_events", "leaves")
        )
    finally:
        c.close()
    return devices, events, leaves


def test_a_replayed_certificate_enrollment_answers_as_the_first_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same signed certificate enrollment sent again within its 5 minutes (a replay,
    or the device's retry after a lost answer) gets the first answer byte for byte, with
    no second registry row or log entry; copies sent at once enroll once; a new request
    of the enrolled key answers the same; a replay after the key's revocation is
    refused, naming it. Before: every replay was refused PERMISSION_DENIED "device ...
    is already enrolled". (Each replay answered is metered as a failed authentication
    is, `test_replayed_certificate_enrollments_are_metered_per_client`: the budget here
    is larger than the 40 replays.)"""
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    db = tmp_path / "a.db"
    a = start_server(db, "--ca", str(tmp_path / "ca"), "--auth-failures-per-minute", "100")
    relay_server, relay, via = _relay(a.address)
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    try:
        home, state, _ = certified_device(tmp_path, tmp_path / "ca")
        args = ["--certificate", str(tmp_path / "chain.pem"), "--server", via]
        assert prov_main(["device", "enroll", "--home", str(home.root), *args]) == 0
        [request] = [r for m, r in relay.seen if m == ENROLL]
        [first] = [r for m, r in relay.answers if m == ENROLL]
        enrolled = _rows(db)
        with grpc.insecure_channel(a.address) as channel:
            enroll: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ENROLL)
            for _ in range(25):
                assert enroll(request, timeout=30) == first
            assert _rows(db) == enrolled

            # a second device's first request, sent 8 times at once: one row, one entry
            other = tmp_path / "other"
            other.mkdir()
            home2, _, chain2 = certified_device(other, tmp_path / "ca")
            key2 = home2.load_key(PASSPHRASE.encode())
            with ProvenanceClient(a.address) as client:
                log_key, _ = client.log_key()
                at = datetime.now(UTC).replace(microsecond=0)
                proof = certificate_enrollment_proof(key2, log_key, at)
                with futures.ThreadPoolExecutor(8) as pool:
                    answers = list(
                        pool.map(
                            lambda _: client.enroll(
                                "", key2.public_key, proof, chain2.decode(), log_key, at
                            ),
                            range(8),
                        )
                    )
            assert answers[0][0].device_id == key2.key_id and answers[0][1] == chain2.decode()
            assert answers == [answers[0]] * 8
            devices, events, leaves = _rows(db)
            assert (devices, events, leaves) == (enrolled[0] + 1, enrolled[1] + 1, enrolled[2] + 1)

            # a new request (a new time, a new proof) of the enrolled key: the same answer
            capsys.readouterr()
            assert prov_main(["device", "enroll", "--home", str(home.root), *args]) == 0
            assert f"device {state.device_id} enrolled" in capsys.readouterr().out
            assert _rows(db) == (devices, events, leaves)

            monkeypatch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
            rc = prov_main(
                ["admin", "revoke", state.device_id, "--reason", "lost", "--server", a.address]
            )
            assert rc == 0
            with pytest.raises(grpc.RpcError) as refused:
                enroll(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        said = refused.value.details() or ""
        assert f"device {state.device_id} was enrolled" in said and "revoked" in said, said
    finally:
        relay_server.stop(None)
        a.stop()


def test_replayed_certificate_enrollments_are_metered_per_client(tmp_path: Path) -> None:
    """An enrollment answered again (a replay of a logged certificate enrollment) costs
    the server two signature checks and store reads and changes nothing, so it is charged
    to its client's `AuthFailureBudget` (--auth-failures-per-minute) as a failed
    authentication is: past the budget that client's Enroll calls are refused unchecked
    (RESOURCE_EXHAUSTED, with when to retry), another client is served as before. Before:
    no replay was charged; one client replaying one captured request with 64 calls in
    flight got 809 answers/s (honest token enrollments p50 2.6 -> 91 ms, with 1,000 in
    flight 1.2 s; bench/bench_enroll_replays.py)."""
    budget = 5
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    a = start_server(
        tmp_path / "a.db",
        "--ca",
        str(tmp_path / "ca"),
        "--auth-failures-per-minute",
        str(budget),
        "--listen",
        "[::]:0",  # 127.0.0.1 and ::1 are two clients
    )
    port = a.address.rpartition(":")[2]
    try:
        _, _, chain = certified_device(tmp_path, tmp_path / "ca")
        key = DeviceHome(tmp_path / "dev").load_key(PASSPHRASE.encode())
        with ProvenanceClient(f"127.0.0.1:{port}") as client:
            log_key, _ = client.log_key()
            at = datetime.now(UTC).replace(microsecond=0)
            proof = certificate_enrollment_proof(key, log_key, at)
            request = pb.EnrollRequest(
                public_key=key.public_key,
                proof_of_possession=proof,
                certificate_chain_pem=chain.decode(),
                log_key=log_key,
                signed_at=wire.ts_to_pb(at),
            ).SerializeToString()
            first = client.enroll("", key.public_key, proof, chain.decode(), log_key, at)
        enrolled = _rows(tmp_path / "a.db")
        for host in ("127.0.0.1", "[::1]"):
            with grpc.insecure_channel(
                f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                enroll: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ENROLL)
                answers = [enroll(request, timeout=30) for _ in range(budget)]
                assert len(set(answers)) == 1
                reply = pb.EnrollResponse.FromString(answers[0])
                assert reply.certificate_chain_pem == first[1]
                assert bytes(reply.device.device_id) == key.key_id
                with pytest.raises(grpc.RpcError) as refused:
                    enroll(request, timeout=30)
                said = refused.value.details() or ""
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, said
                assert "--auth-failures-per-minute" in said and "answered again" in said, said
                trailers = {m.key: m.value for m in refused.value.trailing_metadata() or ()}
                assert 0 < float(trailers[RETRY_AFTER_KEY]) <= 60 / budget
        assert _rows(tmp_path / "a.db") == enrolled
    finally:
        a.stop()


def test_a_token_enrollment_whose_answer_was_lost_is_answered_on_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov device enroll` with a one-time token whose answer a relay loses (the server
    enrolled the key and spent the token) run again with the same token: the server
    answers the device as it stands and the chain it was enrolled with, byte for byte
    the lost answer, and logs and stores nothing. The same token with another key is
    refused "already used", as before, and so is the retry once the key is revoked,
    naming the revocation. Before: the retry was refused "this enrollment token was
    already used", and the device could not learn it had been enrolled."""
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    db = tmp_path / "a.db"
    a = start_server(db, "--ca", str(tmp_path / "ca"))
    relay_server, relay, via = _relay(a.address)
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    try:
        home = DeviceHome(tmp_path / "dev")
        state, _ = home.init(PASSPHRASE.encode())
        with ProvenanceClient(a.address, ADMIN_TOKEN) as admin:
            token, _ = admin.create_enrollment_token(label="desk camera 3")
        monkeypatch.setenv("PROV_ENROLL_TOKEN", token)
        before = _rows(db)
        relay.drop.add(ENROLL)
        assert prov_main(["device", "enroll", "--home", str(home.root), "--server", via]) == 1
        assert "the relay lost the answer" in capsys.readouterr().err
        [lost] = [r for m, r in relay.answers if m == ENROLL]
        enrolled = _rows(db)
        assert enrolled == (before[0] + 1, before[1] + 1, before[2] + 1)
        assert not home.cert_path.exists()

        relay.drop.clear()
        assert prov_main(["device", "enroll", "--home", str(home.root), "--server", via]) == 0
        assert f"device {state.device_id} enrolled" in capsys.readouterr().out
        [_, again] = [r for m, r in relay.answers if m == ENROLL]
        assert again == lost
        reply = pb.EnrollResponse.FromString(again)
        assert reply.device.label == "desk camera 3"
        assert home.cert_path.read_text() == reply.certificate_chain_pem != ""
        assert _rows(db) == enrolled

        other = DeviceKey.generate()
        pop = sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
        with ProvenanceClient(a.address) as client:
            with pytest.raises(TransportError, match="already used"):
                client.enroll(token, other.public_key, pop)
        monkeypatch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
        rc = prov_main(
            ["admin", "revoke", state.device_id, "--reason", "lost", "--server", a.address]
        )
        assert rc == 0
        capsys.readouterr()
        assert prov_main(["device", "enroll", "--home", str(home.root), "--server", via]) == 1
        said = capsys.readouterr().err
        assert f"device {state.device_id} was enrolled" in said and "revoked" in said, said
        assert _rows(db) == (enrolled[0], enrolled[1] + 1, enrolled[2] + 1)
    finally:
        relay_server.stop(None)
        a.stop()
