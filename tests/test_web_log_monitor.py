"""`prov web` as a monitor of the log it shows (h-webmono61): it remembers, per log key,
the newest checkpoint it verified, and holds each latest checkpoint the service presents
to it. A relay replaying an older checkpoint the log genuinely signed (to end a listing
early, or show an older log), or saying the log is empty after entries, is a 502 naming
both sizes; a checkpoint of a newer size that the service's consistency proof does not
prove to extend the remembered one, or another root at the remembered size, is a 502
(a fork); honest growth is 200, one consistency proof asked per new size. The
explorer's search by file hash shows the entry it checked, read once (no redirect to an
entry page reading it again). A real `prov serve` logging real claims of a real device,
a real gRPC relay on a real port, a real `prov web`; no mocks."""

from __future__ import annotations

import base64
import hashlib
import html
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.v1 import provenance_pb2 as pb
from provenance.web import logviews
from tests.conftest import (
    GET_ENTRIES,
    SAMPLES,
    Cli,
    RelayAnswer,
    ServerProc,
    enroll,
    relay,
    sign_sample,
    start_server,
)
from tests.test_web_cited import _upload, _web

_GET_LOG_KEY = "/provenance.v1.Log/GetLogKey"
_GET_CHECKPOINT = "/provenance.v1.Log/GetCheckpoint"
_GET_CONSISTENCY = "/provenance.v1.Log/GetConsistencyProof"

#: What every refusal of an older checkpoint says, in a reader's words.
_OLDER = (
    "the provenance service behind this page showed an older state of the log than it showed before"
)


def _said(r: httpx.Response) -> str:
    """The error an API answer or a page says, its blanks made single."""
    if r.headers.get("content-type", "").startswith("application/json"):
        return " ".join(r.json()["error"]["message"].split())
    return " ".join(html.unescape(r.text).split())


def _checkpoint_now(server: ServerProc) -> bytes:
    """The real server's GetCheckpoint answer now (its genuinely signed checkpoint)."""
    channel = grpc.insecure_channel(server.address)
    try:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_GET_CHECKPOINT)
        return bytes(call(pb.GetCheckpointRequest().SerializeToString(), timeout=60))
    finally:
        channel.close()


@pytest.mark.parametrize("pin", [False, True], ids=["presented-key", "pinned-key"])
def test_an_older_genuine_checkpoint_replayed_is_refused_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path, pin: bool
) -> None:
    """The relay first relays the log (3 entries) honestly, then replays the log's
    genuine checkpoint of 2 entries, read before the last capture, with GetEntries cut
    to match it, then says the log is empty. Before h-webmono61: 200, the listing cut to
    entries 0 and 1 and /log showing a log of 2 entries, then an empty log; now each is
    a 502 naming both sizes."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    older = _checkpoint_now(server)  # 2 entries: the enrollment and the rocket
    sign_sample(enrolled, tmp_path, "chelsea.png")
    mode = {"now": "honest"}

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if mode["now"] == "empty":
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "the log is empty")
        return older if mode["now"] == "older" else forward(request)

    def entries(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        page = pb.GetEntriesResponse.FromString(forward(request))
        if mode["now"] != "honest":  # the entries past the replayed checkpoint's 2 hidden
            keep = max(0, min(len(page.entries), 2 - page.start))
            del page.entries[keep:]
            page.next = page.start + keep
        return bytes(page.SerializeToString())

    with ProvenanceClient(server.address, timeout=60) as c:
        real, _ = c.log_key()
    answers: dict[str, RelayAnswer] = {_GET_CHECKPOINT: checkpoint, GET_ENTRIES: entries}
    pinned = ("--log-key", real) if pin else ()
    with relay(server.address, answers) as address, _web(address, *pinned) as http:
        r = http.get("/api/v1/checkpoint")
        assert r.status_code == 200 and r.json()["size"] == 3, r.text
        assert http.get("/log").status_code == 200
        mode["now"] = "older"
        for path, params in [
            ("/api/v1/entries", {"start": "0", "limit": "100"}),
            ("/log", {}),
            ("/api/v1/checkpoint", {}),
            ("/log/entries/1", {}),
            ("/api/v1/proofs/inclusion", {"index": "0"}),  # h-webfix61: before, 200
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 502, (path, r.status_code, r.text[:200])
            said = _said(r)
            assert _OLDER in said and "checkpoint of 2 entries, after one of 3" in said, said
            assert address not in said, said
        mode["now"] = "empty"
        for path in ["/log", "/api/v1/checkpoint"]:
            r = http.get(path)
            assert r.status_code == 502, (path, r.status_code, r.text[:200])
            said = _said(r)
            assert _OLDER in said and "empty, after a signed checkpoint of 3" in said, said
        mode["now"] = "honest"
        r = http.get("/api/v1/entries", params={"start": "0"})
        assert r.status_code == 200 and len(r.json()["entries"]) == 3, r.text


def _signed_over(signer: LogSigner, origin: str, leaves: list[bytes]) -> bytes:
    """A GetCheckpoint answer: a checkpoint of the tree of ``leaves`` (leaf hashes),
    signed by ``signer`` under ``origin``."""
    tree = merkle.CompactRange()
    for leaf in leaves:
        tree.append(leaf)
    now = datetime.now(UTC).replace(microsecond=0)
    note = signer.sign(Checkpoint(origin, len(leaves), tree.root(), now))
    return bytes(pb.GetCheckpointResponse(checkpoint=note).SerializeToString())


def forger(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> tuple[list[bytes], list[bytes], LogSigner, str]:
    """(the leaf hashes of the real log, made 3 entries by two captures; 2 forged leaf
    hashes; a log signer of a key of its own under the log's origin; that origin), for
    a relay presenting that key as the log's to sign trees the real log never had."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    with ProvenanceClient(server.address, timeout=60) as c:
        _, origin = c.log_key()
        data, _ = c.entries(0, 3)
    real = [merkle.leaf_hash(e) for e in data]
    fake = [hashlib.sha256(b"forged %d" % i).digest() for i in range(2)]
    return real, fake, LogSigner(Ed25519PrivateKey.generate(), origin), origin


def test_a_fork_at_a_newer_or_the_same_size_is_refused_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A relay presenting a log key of its own signs, first, the real tree of 3 entries
    (200), then a tree of 4 whose first 3 leaves are not the real ones (a fork: the
    service's consistency proof from 3 to 4, of the real log, does not verify against
    it), then another tree of 3. Before h-webmono61 each was 200, the forked log shown."""
    real, fake, signer, origin = forger(enrolled, server, tmp_path)
    notes = {
        "honest": _signed_over(signer, origin, real),
        "newer": _signed_over(signer, origin, [real[0], fake[0], real[2], fake[1]]),
        "same": _signed_over(signer, origin, [real[0], real[1], fake[0]]),
    }
    mode = {"now": "honest"}

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=signer.verifier_key(), origin=origin)
        return bytes(answer.SerializeToString())

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        return notes[mode["now"]]

    answers: dict[str, RelayAnswer] = {_GET_LOG_KEY: log_key, _GET_CHECKPOINT: checkpoint}
    with relay(server.address, answers) as address, _web(address) as http:
        r = http.get("/api/v1/checkpoint")
        assert r.status_code == 200 and r.json()["size"] == 3, r.text
        sign_sample(enrolled, tmp_path, "grace_hopper.jpg")  # the real log has 4: a proof
        mode["now"] = "newer"
        for path in [
            "/api/v1/checkpoint",
            "/log",
            "/api/v1/entries?start=0",
            "/api/v1/proofs/inclusion?index=0",  # h-webfix61: before, 200 in the forked log
        ]:
            r = http.get(path)
            assert r.status_code == 502, (path, r.status_code, r.text[:200])
            said = _said(r)
            assert "showed a log of 4 entries that it did not prove grows out of the 3" in said
            assert "consistency proof does not verify" in said and "a fork" in said, said
        mode["now"] = "same"
        r = http.get("/api/v1/checkpoint")
        assert r.status_code == 502, r.text
        said = _said(r)
        assert "showed two different logs of 3 entries" in said and "a fork" in said, said


def test_honest_growth_asks_one_consistency_proof_per_new_size(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The log grows under the page: every read is 200, and the page asks the service
    one consistency proof for each new size it sees (from the size before), however many
    pages read it. A proof or inclusion at a past size asked for is no rollback: 200."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    asked, counted = counted_proofs()

    reads = [
        "/api/v1/checkpoint",
        "/log",
        "/api/v1/entries?start=0",
        "/log/entries/1",
        "/api/v1/entries/0",
        "/api/v1/proofs/inclusion?index=1",
        "/api/v1/checkpoint",
    ]
    with relay(server.address, {_GET_CONSISTENCY: counted}) as address, _web(address) as http:
        for path in reads:
            assert http.get(path).status_code == 200, path
        assert asked == []
        sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
        for path in reads:
            assert http.get(path).status_code == 200, path
        assert http.get("/api/v1/checkpoint").json()["size"] == 4
        assert asked == [(3, 4)]
        proof = http.get("/api/v1/proofs/inclusion", params={"index": "1"}).json()
        assert proof["tree_size"] == 4 and proof["verified"] is True, proof
        sign_sample(enrolled, tmp_path, "generated_controlnet.png")
        for path in reads:
            assert http.get(path).status_code == 200, path
        assert asked == [(3, 4), (4, 5)]
        for path, params in [
            ("/log/consistency", {"first": "1", "second": "2"}),
            ("/api/v1/proofs/consistency", {"first": "2", "second": "3"}),
            ("/api/v1/proofs/inclusion", {"index": "0", "tree_size": "1"}),
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 200, (path, r.text)


def test_the_search_by_file_hash_shows_the_entry_it_checked(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """`/log/find?q=SHA` of a logged capture answers that entry's page itself (200),
    reading the entry once, checked to be the claim the lookup cited. The relay sends
    the cited entry honestly the first time it is asked for, another capture's entry
    after. Before h-webmono61 the search read and checked it, then redirected to
    /log/entries/N, which read it again unchecked: 200 with the other capture's entry
    shown as found."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b, _ = sign_sample(enrolled, tmp_path, "chelsea.png")
    sha_a, sha_b = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b))
    ia, ib = 1, 2
    read: list[int] = []

    def swapped(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.GetEntriesRequest.FromString(request)
        if asked.start != ib:
            return forward(request)
        read.append(ib)
        if len(read) == 1:
            return forward(request)
        other = pb.GetEntriesResponse.FromString(
            forward(pb.GetEntriesRequest(start=ia, limit=1).SerializeToString())
        )
        page = pb.GetEntriesResponse(entries=other.entries[:1], start=ib, next=ib + 1)
        return bytes(page.SerializeToString())

    with relay(server.address, {GET_ENTRIES: swapped}) as address, _web(address) as http:
        page = http.get("/log/find", params={"q": sha_b}, follow_redirects=True)
        assert page.status_code == 200, page.text
        shown = page.text.split('id="file-sha256">', 1)[1][:64]
        assert shown == sha_b, (shown, sha_a, sha_b)
        assert sha_a not in page.text, page.text
        assert "Found by the search for the file SHA-256" in page.text, page.text
        assert f"Log entry #{ib}" in page.text, page.text
        assert read == [ib], read


class _HeldRead:
    """A relay's GetCheckpoint answer (`relay`) that forwards every call at once but
    the plain one after `arm`: that one waits for `go` before it forwards (the real answer
    then, or the real refusal), then for `release` before it answers it: an honest
    service's answer slowed on its way, overtaken by a later request's."""

    def __init__(self, notes: Callable[[bytes], bytes] | None = None) -> None:
        self.notes = notes or (lambda real: real)  # each answer sent, from the real one
        self.armed = False
        self.entered, self.go, self.read, self.release = (threading.Event() for _ in range(4))

    def arm(self) -> None:
        self.armed = True

    def __call__(self, request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if pb.GetCheckpointRequest.FromString(request).cosigned:
            return forward(request)  # the latest is held, not the cosigned (read first)
        if not self.armed:
            return self.notes(forward(request))
        self.armed = False
        self.entered.set()
        assert self.go.wait(120)
        try:
            return self.notes(forward(request))
        finally:
            self.read.set()
            assert self.release.wait(120)

    def race(
        self,
        http: httpx.Client,
        before_read: Callable[[], object],
        after_read: Callable[[], object],
    ) -> tuple[httpx.Response, httpx.Response]:
        """(slow, fast): ``GET /api/v1/checkpoint`` on a thread of its own, its call held
        (`arm`) while ``before_read`` runs, then read, and held again while
        ``after_read`` runs and a second ``GET /api/v1/checkpoint`` (fast) is answered;
        then the slow one is answered."""
        self.arm()
        slow: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: slow.append(http.get("/api/v1/checkpoint")))
        thread.start()
        try:
            assert self.entered.wait(120)
            before_read()
            self.go.set()
            assert self.read.wait(120)
            after_read()
            fast = http.get("/api/v1/checkpoint")
        finally:
            self.go.set()
            self.release.set()
            thread.join(180)
        return slow[0], fast


def test_a_request_overtaken_by_a_newer_read_is_no_rollback(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Two requests at once while the log grows: the first reads the honest service's
    checkpoint of 3 entries, but its answer is slow on the way; the second, after one
    more capture, reads 4 and the page moves its memory to 4 (a proof from 2). The first
    answer then comes: an older checkpoint than the one remembered, but read while the
    page had seen only 2, so it is no rollback; it is proven to be part of the log of 4
    (one proof, 3 to 4): 200. Before the fix, a 502 "showed an older state of the log"
    for an honest service."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")  # 2 entries: the enrollment, the rocket
    held = _HeldRead()
    asked, counted = counted_proofs()

    answers: dict[str, RelayAnswer] = {_GET_CHECKPOINT: held, _GET_CONSISTENCY: counted}
    with relay(server.address, answers) as address, _web(address) as http:
        assert http.get("/api/v1/checkpoint").json()["size"] == 2
        r, fast = held.race(
            http,
            lambda: sign_sample(enrolled, tmp_path, "chelsea.png"),  # 3: the slow read
            lambda: sign_sample(enrolled, tmp_path, "grace_hopper.jpg"),  # 4: the fast
        )
        assert fast.status_code == 200 and fast.json()["size"] == 4, fast.text
        assert r.status_code == 200 and r.json()["size"] == 3, r.text
        assert asked == [(2, 4), (3, 4)], asked
        assert http.get("/api/v1/checkpoint").json()["size"] == 4


def test_an_empty_log_read_overtaken_by_its_first_entry_is_no_rollback(
    cli: Cli, server: ServerProc
) -> None:
    """A request reads the empty log (the service's honest OUT_OF_RANGE), its answer
    slow on the way; meanwhile a device enrols (the log's first entry) and another
    request reads the checkpoint of 1. The slow answer then comes: the log was empty
    when that request read it, as the page knew no entries then: 404 "the log is empty",
    not a rollback. Before the fix, a 502 "it says the log is empty, after a signed
    checkpoint of 1 entries"."""
    held = _HeldRead()
    with relay(server.address, {_GET_CHECKPOINT: held}) as address, _web(address) as http:
        r, fast = held.race(http, lambda: None, lambda: enroll(cli))
        assert fast.status_code == 200 and fast.json()["size"] == 1, fast.text
        assert r.status_code == 404 and "the log is empty" in _said(r), (r.status_code, r.text)


def test_an_overtaken_answer_of_another_tree_is_a_fork_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """As in the test above, but the slow answer is a checkpoint of 3 entries whose last
    leaf is not the log's (a relay presenting a key of its own signs the real tree, but
    that one): older than the 4 remembered since, and not older than what the page knew
    as it asked, yet the service's proof from 3 to 4 does not tie it to the log of 4:
    502, a fork. Overtaken answers are proven, not taken on their word."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")  # 2 entries
    with ProvenanceClient(server.address, timeout=60) as c:
        _, origin = c.log_key()
    signer = LogSigner(Ed25519PrivateKey.generate(), origin)
    forged = {"now": False}

    def resigned(real: bytes) -> bytes:
        note = pb.GetCheckpointResponse.FromString(real).checkpoint
        size = int(note.split("\n")[1])  # the note's second line: the tree size
        with ProvenanceClient(server.address, timeout=60) as c:
            leaves = [merkle.leaf_hash(e) for e in c.entries(0, size)[0]]
        if forged["now"]:
            leaves[-1] = hashlib.sha256(b"forged").digest()
        return _signed_over(signer, origin, leaves)

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=signer.verifier_key(), origin=origin)
        return bytes(answer.SerializeToString())

    held = _HeldRead(resigned)
    answers: dict[str, RelayAnswer] = {_GET_LOG_KEY: log_key, _GET_CHECKPOINT: held}
    with relay(server.address, answers) as address, _web(address) as http:
        assert http.get("/api/v1/checkpoint").json()["size"] == 2

        def forge_3() -> None:
            sign_sample(enrolled, tmp_path, "chelsea.png")
            forged["now"] = True

        def honest_4() -> None:
            forged["now"] = False
            sign_sample(enrolled, tmp_path, "grace_hopper.jpg")

        r, fast = held.race(http, forge_3, honest_4)
        assert fast.status_code == 200 and fast.json()["size"] == 4, fast.text
        assert r.status_code == 502, (r.status_code, r.text)
        said = _said(r)
        assert "showed a log of 3 entries that it did not prove is part of the 4" in said, said
        assert "consistency proof does not verify" in said and "a fork" in said, said


def test_a_new_empty_log_under_a_new_key_is_empty_not_a_rollback(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """`prov web` (no --log-key) in front of a `prov serve` whose log it read (2
    entries), then of one started on a new database: a new log, its own key, empty yet.
    The page follows the key the service presents (a checkpoint signed with a new one
    asks for it again), so the new log's "empty" is 404 "the log is empty", not a
    rollback of the old log's 2 entries. Before the fix, a 502 "it says the log is
    empty, after a signed checkpoint of 2 entries", until the new log's first entry."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    fresh = start_server(tmp_path / "new.db")
    channel = grpc.insecure_channel(fresh.address)
    moved = {"now": False}

    def to_fresh(name: str) -> RelayAnswer:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(name)

        def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
            return bytes(call(request, timeout=60)) if moved["now"] else forward(request)

        return answer

    answers = {name: to_fresh(name) for name in (_GET_LOG_KEY, _GET_CHECKPOINT)}
    try:
        with relay(server.address, answers) as address, _web(address) as http:
            r = http.get("/api/v1/checkpoint")
            assert r.status_code == 200 and r.json()["size"] == 2, r.text
            moved["now"] = True
            r = http.get("/api/v1/checkpoint")
            assert r.status_code == 404 and "the log is empty" in _said(r), (r.status_code, r.text)
    finally:
        channel.close()
        fresh.stop()


#: `prov web --service-timeout` of `test_a_request_behind_a_stalled_proof_gets_one_timeout`.
_STALL_TIMEOUT_S = 10.0


def test_a_request_behind_a_stalled_proof_gets_one_timeout(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A service stalls the consistency proof of a new size: the request that asked it
    holds the memory's lock for its timeout (504); a second request, come meanwhile,
    waits for the lock, then asks the proof itself. The wait and its proof together get
    one --service-timeout, so its proof comes with what is left (noted by the relay), or
    is not asked when nothing is, not with a whole timeout more. Before the fix it came with the whole 10 s (a request held for
    two timeouts behind a stalled proof, more with several)."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    stalled, released = threading.Event(), threading.Event()
    deadlines: list[float | None] = []

    def stall(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not stalled.is_set():
            stalled.set()
            released.wait(120)
            return b""  # its caller gave up long since
        deadlines.append(context.time_remaining())
        return forward(request)

    args = ("--service-timeout", f"{_STALL_TIMEOUT_S:g}")
    answers: dict[str, RelayAnswer] = {_GET_CONSISTENCY: stall}
    try:
        with relay(server.address, answers) as address, _web(address, *args) as http:
            assert http.get("/api/v1/checkpoint").json()["size"] == 2
            sign_sample(enrolled, tmp_path, "chelsea.png")
            first: list[httpx.Response] = []
            holder = threading.Thread(target=lambda: first.append(http.get("/api/v1/checkpoint")))
            holder.start()
            assert stalled.wait(120)
            # waits for the lock, then asks its own proof with what is left, if any (504)
            r = http.get("/api/v1/checkpoint")
            assert r.status_code in (200, 504), r.text
            holder.join(180)
            assert first and first[0].status_code == 504, first
    finally:
        released.set()
    # what was left after the wait (the gap between the two requests' starts, or none:
    # no proof asked), not a whole 10 s more
    assert all(d is not None and d < _STALL_TIMEOUT_S / 2 for d in deadlines), deadlines


def test_an_answer_over_the_receive_limit_is_the_services_fault_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A hostile service answers a consistency proof of 300,000 hashes (9.6 MB, over the
    gRPC client's 8 MiB receive limit). Before h-webfix61 the page and the API answered
    413 RESOURCE_EXHAUSTED ("Too large") saying "the server at 127.0.0.1:PORT answered
    with a message of 9,600,... bytes": the visitor's fault, the service's internal
    address shown. Now each is a 502 BAD_GATEWAY in a reader's words, no address; a
    visitor's own upload over the page's limit stays 413."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")

    def huge(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        req = pb.GetConsistencyProofRequest.FromString(request)
        proof = [bytes(32)] * 300_000
        answer = pb.GetConsistencyProofResponse(
            first_size=req.first_size, second_size=req.second_size, proof=proof
        )
        return bytes(answer.SerializeToString())

    with relay(server.address, {_GET_CONSISTENCY: huge}) as address, _web(address) as http:
        for path, params in [
            ("/api/v1/proofs/consistency", {"first": "1", "second": "2"}),
            ("/log/consistency", {"first": "1", "second": "2"}),
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 502, (path, r.status_code, r.text[:300])
            said = _said(r)
            assert address not in said and "Too large" not in said, said
            assert "did not answer as expected" in said, said
        assert (
            http.get("/api/v1/proofs/consistency", params={"first": "1", "second": "2"}).json()[
                "error"
            ]["status"]
            == "BAD_GATEWAY"
        )
        r = http.post("/api/v1/lookup", content=b"{" + b" " * (4 * 1024 * 1024) + b"}")
        assert r.status_code == 413, (r.status_code, r.text[:300])  # the visitor's own size


def test_the_explorer_shows_the_cosigners_a_cosigned_checkpoint_names_unchecked(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The relay answers GetCheckpoint(cosigned) with the log's real checkpoint of 2
    entries and a witness's signature line appended (the page knows no witness key), and
    the plain GetCheckpoint honestly. `/api/v1/checkpoint` says ``cosigned``: the note,
    its size, the names as the note carries them under ``unverified_names`` (this page
    has no witness keys); `/log` shows them marked not checked.
    Before h-webfix61 neither said anything of cosignatures. A service with no witnesses
    (the real one: FAILED_PRECONDITION) is ``cosigned`` null."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    real = _checkpoint_now(server)
    note = pb.GetCheckpointResponse.FromString(real).checkpoint
    witness_line = "— witness.test/w1 " + base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    sign_sample(enrolled, tmp_path, "chelsea.png")

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not pb.GetCheckpointRequest.FromString(request).cosigned:
            return forward(request)
        answer = pb.GetCheckpointResponse(checkpoint=note + witness_line + "\n", quorum=1)
        return bytes(answer.SerializeToString())

    with _web(server.address) as http:
        r = http.get("/api/v1/checkpoint")
        assert r.status_code == 200 and r.json()["cosigned"] is None, r.text
    with relay(server.address, {_GET_CHECKPOINT: checkpoint}) as address, _web(address) as http:
        r = http.get("/api/v1/checkpoint")
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["size"] == 3, view
        cosigned = view["cosigned"]
        assert cosigned["size"] == 2 and cosigned["checkpoint"].startswith(note), cosigned
        assert cosigned["unverified_names"] == ["witness.test/w1"], cosigned
        said = _said(http.get("/log"))
        assert "Cosigned checkpoint" in said and "witness.test/w1" in said, said
        assert "not checked" in said, said


def test_an_answer_that_is_no_reply_of_the_service_is_a_502_without_its_address(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A hostile (or wrong) service answers a consistency proof with bytes that do not
    parse as the reply. Before h-revwebfix61 the page and the API answered 500 INTERNAL
    saying "the server at 127.0.0.1:PORT answered with a message that is no reply of this
    service": the service's internal address shown, and a 500 (this page's fault) for
    what is the service's. Now each is a 502 BAD_GATEWAY in a reader's words, no address."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")

    def garbage(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        return b"\xff\xff\xff\xff"  # a field of wire type 7: no protobuf message parses it

    with relay(server.address, {_GET_CONSISTENCY: garbage}) as address, _web(address) as http:
        for path in ("/api/v1/proofs/consistency", "/log/consistency"):
            r = http.get(path, params={"first": "1", "second": "2"})
            assert r.status_code == 502, (path, r.status_code, r.text[:300])
            said = _said(r)
            assert address not in said and "127.0.0.1" not in said, said
            assert "did not answer as expected" in said, said
        body = http.get("/api/v1/proofs/consistency", params={"first": "1", "second": "2"})
        assert body.json()["error"]["status"] == "BAD_GATEWAY"


def test_a_report_without_a_verdict_is_a_502_without_the_services_address(
    server: ServerProc, tmp_path: Path
) -> None:
    """A service (a stranger's, or a proxy) answers VerifyFile with an empty report: no
    verdict. Before h-revwebfix61 /api/v1/verify and /verify answered 500 INTERNAL "the
    server at 127.0.0.1:PORT answered a report with no verdict": the internal address
    shown. Now a 502 BAD_GATEWAY in a reader's words, the text kept for the log."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    empty = bytes(pb.VerificationReport().SerializeToString())
    uploads = {"/provenance.v1.Verification/VerifyFile": empty}
    with relay(server.address, {}, uploads=uploads) as address, _web(address) as http:
        for page in (False, True):
            r = _upload(http, photo, page)
            assert r.status_code == 502, (page, r.status_code, r.text[:300])
            said = _said(r)
            assert address not in said and "127.0.0.1" not in said, said
            assert "did not answer as expected" in said, said


def test_hostile_cosigner_names_are_shown_escaped_and_a_bad_cosigned_note_is_a_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A hostile service's cosigned note: the log's real checkpoint with signature lines
    whose names are markup (valid key names: no blank, no '+'). `/log` shows them escaped,
    nothing of them executable; a note of more signature lines than a note may hold, or
    one without the log's signature, is a 502 without the service's address (h-revwebfix61
    review of h-webfix61: each held before this test, which guards them)."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    note = pb.GetCheckpointResponse.FromString(_checkpoint_now(server)).checkpoint
    sig = base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    hostile = ["<script>alert(1)</script>", '"><img/src=x/onerror=alert(1)>', "w" * 200]
    answers = {
        "markup": note + "".join(f"— {n} {sig}\n" for n in hostile),
        "many": note + "".join(f"— w{i} {sig}\n" for i in range(2_000)),
        "unsigned": note[: note.rfind("\n\n") + 2] + f"— witness.test/w1 {sig}\n",
    }
    said_now = ["markup"]

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not pb.GetCheckpointRequest.FromString(request).cosigned:
            return forward(request)
        cosigned = answers[said_now[0]]
        return bytes(pb.GetCheckpointResponse(checkpoint=cosigned, quorum=1).SerializeToString())

    with relay(server.address, {_GET_CHECKPOINT: checkpoint}) as address:
        with _web(address) as http:
            page = http.get("/log")
            assert page.status_code == 200, page.text[:300]
            assert "<script>alert" not in page.text and "<img/src" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, page.text
            names = http.get("/api/v1/checkpoint").json()["cosigned"]["unverified_names"]
            assert names == hostile, names
        for kind in ("many", "unsigned"):
            said_now[0] = kind
            # a web of its own: one that showed the "markup" note keeps it a while
            # (logviews.COSIGNED_KEEP_S, h-cosigcache61)
            with _web(address) as http:
                for path in ("/log", "/api/v1/checkpoint"):
                    r = http.get(path)
                    assert r.status_code == 502, (kind, path, r.status_code, r.text[:300])
                    assert address not in _said(r) and "127.0.0.1" not in _said(r), _said(r)


def test_views_of_the_checkpoint_ask_the_cosigned_one_once_a_while(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Six views (`/api/v1/checkpoint`, `/log`, three each) through a relay counting the
    service's GetCheckpoint calls: one plain read each (the latest), and the cosigned one
    asked once per `logviews.COSIGNED_KEEP_S` seconds, at most 1 + the whole periods the
    views took (each ask after the last one's period ended). Before h-cosigcache61 each
    view asked it again: 6 cosigned reads, 2 service reads a checkpoint view."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    asked = {"plain": 0, "cosigned": 0}
    lock = threading.Lock()

    def counted(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        with lock:
            asked[
                "cosigned" if pb.GetCheckpointRequest.FromString(request).cosigned else "plain"
            ] += 1
        return forward(request)

    with relay(server.address, {_GET_CHECKPOINT: counted}) as address, _web(address) as http:
        began = time.monotonic()
        for path in ["/api/v1/checkpoint", "/log"] * 3:
            r = http.get(path)
            assert r.status_code == 200, (path, r.text[:300])
        took = time.monotonic() - began
    most = 1 + int(took // logviews.COSIGNED_KEEP_S)
    assert asked["plain"] == 6 and 1 <= asked["cosigned"] <= most, (asked, took)


def test_a_latest_checkpoint_smaller_than_the_cosigned_one_is_a_rollback_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The relay presents the log's genuine checkpoint of 2 entries as the latest and its
    genuine checkpoint of 3 as the cosigned one (read first): the latest was held back.
    Before h-cosigcache61: 200, a log of 2 entries shown beside a cosigned checkpoint of
    3; now a 502 naming both sizes, in logmonitor's words, without the relay's address."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    older = _checkpoint_now(server)  # 2 entries: the enrollment and the rocket
    sign_sample(enrolled, tmp_path, "chelsea.png")
    newer = pb.GetCheckpointResponse.FromString(_checkpoint_now(server)).checkpoint

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not pb.GetCheckpointRequest.FromString(request).cosigned:
            return older
        return bytes(pb.GetCheckpointResponse(checkpoint=newer, quorum=1).SerializeToString())

    with relay(server.address, {_GET_CHECKPOINT: checkpoint}) as address, _web(address) as http:
        for path in ["/api/v1/checkpoint", "/log"]:
            r = http.get(path)
            assert r.status_code == 502, (path, r.status_code, r.text[:300])
            said = _said(r)
            assert _OLDER in said and "checkpoint of 2 entries as its latest" in said, said
            assert "after a cosigned one of 3 entries" in said, said
            assert address not in said and "127.0.0.1" not in said, said


def counted_proofs() -> tuple[list[tuple[int, int]], RelayAnswer]:
    """A relay answer for GetConsistencyProof that forwards each request and records its
    (first size, second size), in order, in the list returned with it (under a lock:
    the page's threads ask at once)."""
    asked: list[tuple[int, int]] = []
    lock = threading.Lock()

    def counted(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        req = pb.GetConsistencyProofRequest.FromString(request)
        with lock:
            asked.append((req.first_size, req.second_size))
        return forward(request)

    return asked, counted
