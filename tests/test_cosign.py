"""Witness cosignatures end to end (issue 16 item 2): real `prov witness serve` and
`prov serve` processes on loopback ports, the server asking its witnesses after each
commit (`--witness URL=KEY`, `--witness-quorum`), receipts brought up to the cosigned
checkpoint, `prov verify`/`prov receipt verify` checking a 2-of-2 policy; a forked log
refused by the witnesses, and a dead witness."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.cosigned import cosigned_receipt, policy_key
from provenance.core import merkle
from provenance.core.errors import ConfigError, LogError, WitnessQuorumError
from provenance.core.keys import DeviceKey
from provenance.core.merkle import MemoryTree
from provenance.log.checkpoint import Checkpoint, NoteVerifier, generate_log_key
from provenance.wire.sidecar import Sidecar, encode_sidecar
from provenance.witness import WitnessStatus, cosigner_vkey, verify_cosignature
from provenance.witness.client import Cosigner, WitnessSpec, parse_witness_option
from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    read_line,
    signed_claim,
    start_server,
    wait_cosigned,
)
from tests.drain import drain
from tests.ports import kept_port

ORIGIN = "media-provenance.local/log"


@dataclass
class WitnessProc:
    """A `prov witness serve` child process."""

    proc: subprocess.Popen[str]
    url: str
    vkey: str

    @property
    def option(self) -> str:
        """Its `prov serve --witness` value."""
        return f"{self.url}={self.vkey}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def start_witness(
    state: Path, name: str, log_vkey: str, listen: str = "127.0.0.1:0"
) -> WitnessProc:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(state.with_suffix(".pem")), "--log-key", log_vkey, "--state", str(state),
         "--name", name, "--listen", listen],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    drain(proc)
    vkey = read_line(proc, "witness key ")
    return WitnessProc(proc, read_line(proc, "witness on "), vkey)


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[WitnessProc]]:
    """Two witnesses of the log whose key is made here, at prov.db's default key path."""
    log_vkey = generate_log_key(tmp_path / "prov.db.logkey.pem", ORIGIN).verifier_key()
    procs = [start_witness(tmp_path / f"w{i}", f"witness.test/w{i}", log_vkey) for i in (1, 2)]
    yield procs
    for w in procs:
        w.stop()


def _policy(witnesses: list[WitnessProc]) -> list[str]:
    return [a for w in witnesses for a in ("--witness", w.option)]


@pytest.fixture
def server(tmp_path: Path, witnesses: list[WitnessProc]) -> Iterator[ServerProc]:
    """`prov serve` with both witnesses and a quorum of 2 (replaces conftest's `server`,
    so `enrolled` uses it)."""
    srv = start_server(tmp_path / "prov.db", *_policy(witnesses), "--witness-quorum", "2")
    yield srv
    srv.stop()


def _wait_cosigned(address: str, size: int) -> str:
    """The server's cosigned checkpoint once it covers ``size`` entries."""
    note, quorum = wait_cosigned(address, size)
    assert quorum == 2
    return note


def _wait_statuses(
    address: str, ready: Callable[[list[WitnessStatus]], bool]
) -> list[WitnessStatus]:
    """The server's witness statuses once ``ready`` says they are."""
    deadline = time.monotonic() + 60
    with ProvenanceClient(address) as c:
        while time.monotonic() < deadline:
            _, _, statuses = c.cosigned_checkpoint()
            if ready(statuses):
                return statuses
            time.sleep(0.05)
    raise AssertionError("the witness statuses did not come in 60 s")


def _write_sidecar(path: Path, key: DeviceKey, address: str, seq: int, prev: bytes = b"") -> Path:
    """Submit a claim by ``key`` to ``address``; write its sidecar with the receipt."""
    signed = signed_claim(key, seq, prev=prev)
    with ProvenanceClient(address) as c:
        receipt, _ = c.submit(signed)
        vkey, _ = c.log_key()
    path.write_bytes(encode_sidecar(Sidecar(signed, key.public_key, receipt, vkey)))
    return path


@pytest.mark.slow
def test_two_witnesses_cosign_receipts_and_refuse_a_fork(
    tmp_path: Path, enrolled: Cli, server: ServerProc, witnesses: list[WitnessProc]
) -> None:
    policy = _policy(witnesses)  # prov serve's
    vkeys = [w.vkey for w in witnesses]
    check = [a for k in vkeys for a in ("--witness", k)]  # prov verify's
    photo = shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "hopper.jpg")
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, err  # leaf 0: the device's enrollment
    sidecar = Path(f"{photo}.prov")
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        log_vkey, _ = c.log_key()
        other = enroll_key(c)  # appends to the fork below, from before the copy (leaf 2)

    note = _wait_cosigned(server.address, 3)
    assert {verify_cosignature(note, k).name for k in vkeys} == {
        "witness.test/w1",
        "witness.test/w2",
    }
    # the receipt was issued at once, before any witness cosigned
    rc, _, err = enrolled("receipt", "verify", str(sidecar), "--log-key", log_vkey, *check)
    assert rc == 14 and "0 of the 2 witness cosignatures required" in err, err
    assert f"`prov receipt refresh {sidecar}` brings it" in err.replace("\n", " "), err
    # `prov verify` brings the matched claim's receipt up to the cosigned checkpoint
    rc, out, err = enrolled("verify", str(photo), "--no-detect", "--witness", vkeys[0],
                            "--witness", f"witness.test/w2={vkeys[1]}")  # fmt: skip
    assert rc == 0, err
    assert "cosigned by 2 of 2 witnesses (quorum 2): witness.test/w1 at" in out
    # `prov receipt refresh` writes it into the sidecar; then it verifies offline
    rc, out, err = enrolled("receipt", "refresh", str(sidecar), *check)
    assert rc == 0 and "cosignature lines by witness.test/w1, witness.test/w2" in out, err
    assert "cosigned by 2 of 2 witnesses" in out
    rc, out, err = enrolled("receipt", "verify", str(sidecar), "--log-key", log_vkey, *check)
    assert rc == 0, err
    assert "cosigned by 2 of 2 witnesses: witness.test/w1 at" in out and "witness.test/w2" in out
    rc, out, err = enrolled("verify", str(photo), "--no-detect", "--json", *check)
    assert rc == 0 and '"met": true' in out, err  # from the refreshed sidecar

    # a fork: a second server from a copy of the database, the same log key
    server.stop()
    fork_db = tmp_path / "fork.db"
    shutil.copy(tmp_path / "prov.db", fork_db)
    shutil.copy(tmp_path / "prov.db.logkey.pem", tmp_path / "fork.db.logkey.pem")
    quorum = ("--witness-quorum", "2")
    honest = start_server(tmp_path / "prov.db", *policy, *quorum)
    forked = start_server(fork_db, *policy, *quorum)
    try:
        good = _write_sidecar(tmp_path / "good.prov", other, honest.address, 1)
        _wait_cosigned(honest.address, 4)
        bad = _write_sidecar(tmp_path / "bad.prov", other, forked.address, 1)  # another leaf 3
        statuses = _wait_statuses(forked.address, lambda ws: all(w.problem for w in ws))
        for w in statuses:
            assert (
                "refused checkpoint 4: 422: the witness cosigned another tree head of size 4"
                in w.problem
            )
            assert "forked" in w.problem
        # the refusal reaches the client: the forked log's receipt never gets the quorum
        rc, _, err = enrolled("receipt", "refresh", str(bad), "--server", forked.address)
        assert rc == 14, err
        assert "witness witness.test/w1" in err and "refused checkpoint 4" in err
        assert "this log is forked" in err and "witness.test/w2" in err
        rc, _, err = enrolled("receipt", "verify", str(bad), "--log-key", log_vkey, *check)
        assert rc == 14, err
        # a file signed into the forked log: the verdict, then the policy fails (exit 14)
        photo2 = shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "second.jpg")
        with open(photo2, "ab") as f:
            f.write(b"\0")  # other bytes, another capture
        rc, out, err = enrolled("sign", str(photo2), "--server", forked.address)
        assert rc == 0, err
        rc, out, err = enrolled("verify", str(photo2), "--no-detect", "--server",
                                forked.address, *check, "--json")  # fmt: skip
        assert rc == 14, err
        assert '"met": false' in out and "refused checkpoint" in out
        # the honest log's receipt of the same leaf index is cosigned
        rc, out, err = enrolled("receipt", "refresh", str(good), "--server", honest.address)
        assert rc == 0, err
        rc, _, err = enrolled("receipt", "verify", str(good), "--log-key", log_vkey, *check)
        assert rc == 0, err
    finally:
        forked.stop()
        honest.stop()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port where nothing listens until the test starts a witness there: held
    for the test by a socket bound with SO_REUSEADDR and not listening, so connections to
    it are refused, no server started on port 0 meanwhile (the other pytest-xdist worker's)
    is given it, and the witness, binding with SO_REUSEADDR, binds beside it. Before, the
    port was bound and let go at once, free for the kernel to give to such a server (as
    closed_port() in tests/conftest.py was, in CI): the dead witness then answered."""
    with kept_port() as held:
        yield int(held.getsockname()[1])


@pytest.mark.slow
def test_a_dead_witness_never_blocks_submissions_and_the_quorum_is_reported(
    tmp_path: Path,
    witnesses: list[WitnessProc],
    capsys: pytest.CaptureFixture[str],
    dead_port: int,
) -> None:
    live = witnesses[0]
    port = dead_port
    dead = f"http://127.0.0.1:{port}={witnesses[1].vkey}"
    witnesses[1].stop()
    srv = start_server(tmp_path / "prov.db", "--witness", live.option, "--witness", dead,
                       "--witness-timeout", "1", "--metrics-listen", "127.0.0.1:0")  # fmt: skip
    try:
        metrics_url = read_line(srv.proc, "metrics on ")
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            key = enroll_key(c)
            log_vkey, _ = c.log_key()
            verifier = NoteVerifier.from_vkey(log_vkey)
            prev = b""
            for seq in range(1, 4):  # each submission is acknowledged, durable, at once
                signed = signed_claim(key, seq, prev=prev)
                receipt, _ = c.submit(signed)
                prev = signed.claim_hash
            statuses = _wait_statuses(
                srv.address, lambda ws: ws[0].size >= 4 and bool(ws[1].problem)
            )
            assert statuses[0].problem == "" and statuses[0].size >= 1
            assert "did not cosign checkpoint" in statuses[1].problem
            # a person's words, not Python's (before: "ConnectionRefusedError: [Errno 111]")
            said = f"witness at 127.0.0.1:{port} is not reachable: Connection refused"
            assert said in statuses[1].problem, statuses[1].problem
            assert "Errno" not in statuses[1].problem
            with pytest.raises(WitnessQuorumError, match="quorum of 2 witnesses") as e:
                cosigned_receipt(c, receipt, signed, verifier)
            assert "witness witness.test/w2" in str(e.value)
        side = tmp_path / "last.prov"
        side.write_bytes(encode_sidecar(Sidecar(signed, key.public_key, receipt, log_vkey)))
        assert prov_main(["receipt", "refresh", str(side), "--server", srv.address]) == 14
        refused = capsys.readouterr().err
        assert said in refused and "ConnectionRefusedError" not in refused, refused
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            text = r.read().decode()
        assert 'prov_witness_requests_total{outcome="failed",witness="witness.test/w2"}' in text
        assert 'prov_witness_requests_total{outcome="cosigned",witness="witness.test/w1"}' in text

        # the witness comes back: retried after its backoff, it cosigns the same
        # checkpoint, which now has the quorum with w1's earlier cosignature
        back = start_witness(tmp_path / "w2", "witness.test/w2", log_vkey, f"127.0.0.1:{port}")
        try:
            _wait_cosigned(srv.address, 4)  # the enrollment and 3 claims
            assert prov_main(["receipt", "refresh", str(side), "--server", srv.address]) == 0
        finally:
            back.stop()
    finally:
        srv.stop()
    logged = srv.stderr()
    assert f"witness witness.test/w2 (http://127.0.0.1:{port}) did not cosign" in logged
    assert "witness witness.test/w2" in logged and "cosigns again, at size 4" in logged
    assert said in logged and "ConnectionRefusedError" not in logged


def _cosigned_requests(witness: str) -> float:
    labels = {"witness": witness, "outcome": "cosigned"}
    return REGISTRY.get_sample_value("prov_witness_requests_total", labels) or 0.0


@pytest.mark.slow
def test_cosigner_coalesces_batches_and_catches_up_with_another_server(tmp_path: Path) -> None:
    """`Cosigner` in this process against a real witness, over an in-memory log: commits
    handed in during a round go out as one newer checkpoint; a cosigner whose newest
    checkpoint is behind the witness's (another server over the same database appended)
    catches up from the store's latest instead of reporting a fork."""
    signer = generate_log_key(tmp_path / "log.pem", ORIGIN)
    name = "witness.test/coalesce"
    w = start_witness(tmp_path / "w", name, signer.verifier_key())
    tree = MemoryTree()
    notes: dict[int, str] = {}

    def grow(n: int) -> tuple[int, str]:
        for _ in range(n):
            tree.append(os.urandom(16))
        notes[tree.size] = signer.sign(Checkpoint(ORIGIN, tree.size, tree.root(), None))
        return tree.size, notes[tree.size]

    def consistency(old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(old, new, tree.get_nodes)

    def latest() -> tuple[int, str]:
        return tree.size, notes[tree.size]

    policy = [WitnessSpec(w.url, w.vkey)]
    first = Cosigner(policy, 1, consistency, latest, interval_s=0.5)
    late = None
    try:
        before = _cosigned_requests(name)
        for _ in range(10):  # ten commits within one interval
            first.submit(*grow(1))
        assert first.wait_cosigned(10, 30)
        assert _cosigned_requests(name) - before <= 2  # the first, then all the rest at once
        stale = notes[3]  # a server that last committed at size 3
        late = Cosigner(policy, 1, consistency, latest)
        late.submit(3, stale)
        assert late.wait_cosigned(10, 30)
        (status,) = late.statuses()
        assert (status.size, status.problem) == (10, "")
        note = late.cosigned()
        assert note is not None and verify_cosignature(note, w.vkey).name == name
    finally:
        first.close()
        if late is not None:
            late.close()
        w.stop()


def test_witness_options_are_checked_with_clear_errors(tmp_path: Path) -> None:
    vkey = cosigner_vkey("witness.test/w1", Ed25519PrivateKey.generate().public_key()
                         .public_bytes_raw())  # fmt: skip
    key_file = tmp_path / "w1.vkey"
    key_file.write_text(vkey + "\n")
    spec = parse_witness_option(f"http://127.0.0.1:8090/prefix/={key_file}")
    assert (spec.url, spec.vkey, spec.name) == (
        "http://127.0.0.1:8090/prefix",
        vkey,
        "witness.test/w1",
    )
    for bad, why in [
        (vkey, "is not URL=KEY"),
        (f"ftp://127.0.0.1:21={vkey}", "its scheme is ftp: and only http:// and https://"),
        ("http://127.0.0.1:8090=not-a-key", "--witness http://127.0.0.1:8090: witness key"),
        # session 61: before, the query, fragment and user name were silently dropped
        (f"http://127.0.0.1:8090/w?x={vkey}", r"a query \(\?...\) cannot be given here"),
        (f"http://127.0.0.1:8090/w#top={vkey}", r"a fragment \(#...\) is never sent"),
        (f"http://user:pw@127.0.0.1:8090/w={vkey}", "holds no user name or password"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_witness_option(bad)
    assert policy_key(f"witness.test/w1={vkey}") == vkey == policy_key(str(key_file))
    with pytest.raises(
        LogError, match="key belongs to the witness named witness.test/w1, not witness.test/w9"
    ):
        policy_key(f"witness.test/w9={vkey}")

    def no_proofs(old: int, new: int) -> list[bytes]:
        raise AssertionError("not called")

    for specs, quorum, why in [
        ([spec], 2, "not between 1 and the 1 witnesses"),
        ([spec], 0, "not between 1 and the 1 witnesses"),
        ([spec, spec], 1, "share a name"),
        ([], 1, "at least one witness"),
    ]:
        with pytest.raises(ConfigError, match=why):
            Cosigner(specs, quorum, no_proofs, lambda: None)


def test_a_quorum_a_cosigned_checkpoint_cannot_show_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve` with 16 --witness and no --witness-quorum (all of them) or a quorum of
    16: a cosigned checkpoint carries at most 15 cosignature lines beside the log's
    signature (c2sp.org/signed-note: verifiers need accept only 16 signatures), so such
    a quorum could never be shown: exit 2 before anything starts, saying what to give.
    A quorum of 15 goes past this check (to the next usage error: the database path is
    a folder here)."""
    args = ["serve", "--db", str(tmp_path), "--listen", "127.0.0.1:0"]
    for i in range(16):
        key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        args += ["--witness", f"http://127.0.0.1:{8090 + i}={cosigner_vkey(f'w.test/{i}', key)}"]
    for quorum in ([], ["--witness-quorum", "16"]):
        assert prov_main([*args, *quorum]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "16 cosignatures" in err and "--witness-quorum 15 or less" in err, err
    assert prov_main([*args, "--witness-quorum", "15"]) == 2
    err = capsys.readouterr().err
    assert "--db" in err and "--witness-quorum" not in err, err


def test_a_client_quorum_no_prov_serve_checkpoint_can_show_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov receipt verify` (as `prov verify` and `prov receipt refresh`) with 16
    --witness and no --witness-quorum (all of them): a `prov serve` checkpoint carries at
    most 15 cosignature lines, so such a quorum always fails (exit 14) and only named
    the 16th witness as missing. Now stderr says why first; a client may check another
    log's checkpoints, so it is a warning, not a usage error. 15 are not warned about.
    The sidecar here is an empty file (exit 2 after the warning)."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/q")
    side = tmp_path / "empty.c2pa.json"
    side.write_bytes(b"")
    keys = [
        cosigner_vkey(f"w.test/{i}", Ed25519PrivateKey.generate().public_key().public_bytes_raw())
        for i in range(16)
    ]
    args = ["receipt", "verify", str(side), "--log-key", log.verifier_key()]
    for count, warned in ((16, True), (15, False)):
        witnesses = [a for k in keys[:count] for a in ("--witness", k)]
        assert prov_main([*args, *witnesses]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert ("a checkpoint from `prov serve` carries at most 15" in err) is warned, err
    witnesses = [a for k in keys for a in ("--witness", k)]
    assert prov_main([*args, *witnesses, "--witness-quorum", "15"]) == 2
    assert "at most 15" not in capsys.readouterr().err
