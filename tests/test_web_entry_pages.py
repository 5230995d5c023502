"""The web log listing (`GET /api/v1/entries?start=N&limit=M`, the explorer `/log`) over
GetEntries pages the service cut short, as an honest `prov serve` cuts a page to its
8 MiB reply (100 video claims logged before the 64 KiB entry bound, up to 213 KB each,
come back as about 39): the listing reads on from each page's ``next`` and holds every
entry asked for, fewer only at the log's end; a page whose ``next`` is not where it ends
(a broken or hostile service) is refused, 502, as `prov log audit` refuses it. A real
`prov serve` logging real claims of a real device, a real gRPC relay on a real port in
front of it answering GetEntries from the real server's pages, a real `prov web`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from tests.conftest import (
    GET_ENTRIES,
    Cli,
    RelayAnswer,
    ServerProc,
    overfull_entries,
    paged_entries,
    relay,
    sign_sample,
    start_web,
)


@contextmanager
def _web_behind(
    server: ServerProc,
    answer: RelayAnswer,
    *web_args: str,
    more: dict[str, RelayAnswer] | None = None,
) -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client of a real `prov web` (with ``web_args``) whose service is a relay
    in front of ``server`` answering GetEntries with ``answer`` (`paged_entries`,
    `overfull_entries`) and the methods of ``more`` with theirs, and the relay's
    HOST:PORT, while in the block."""
    with relay(server.address, {GET_ENTRIES: answer, **(more or {})}) as address:
        web = start_web(address, *web_args)
        try:
            with httpx.Client(base_url=web.address, timeout=120) as http:
                yield http, address
        finally:
            web.stop()


def _one_a_page(start: int, n: int) -> tuple[int, int]:
    """An honest cut: one entry a page (fewer entries, ``next`` where they end)."""
    return min(n, 1), start + min(n, 1)


@pytest.fixture
def three_entries(enrolled: Cli, server: ServerProc, tmp_path: Path) -> ServerProc:
    """The server with the enrollment and two signed captures logged: entries 0 to 2."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    return server


def test_a_listing_reads_on_over_pages_the_service_cut(three_entries: ServerProc) -> None:
    """(Before: `/api/v1/entries?limit=100` answered entry 0 alone, as if the log ended
    there, and `/log`, the newest entries, showed #0 without #1 and #2 or a link to them.)"""
    with _web_behind(three_entries, paged_entries(_one_a_page)) as (http, _):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert sorted(body) == ["entries", "start"], body  # the fields as before
        assert [e["index"] for e in body["entries"]] == [0, 1, 2], body
        r = http.get("/api/v1/entries", params={"start": "1", "limit": "1"})
        assert [e["index"] for e in r.json()["entries"]] == [1], r.text
        page = http.get("/log")
        assert page.status_code == 200, page.text
        for i in range(3):
            assert f'href="/log/entries/{i}"' in page.text, page.text


@pytest.mark.parametrize(
    ("by", "said"),
    [
        # the first page holds entry 0 and says the next starts at 2: entry 1 skipped
        (lambda start, n: (1, 2) if start == 0 else (n, start + n), "skipping entry 1"),
        # the next page starts where this one did: the same entry again, without end
        (lambda start, n: (min(n, 1), start), "entry 0 again (pages overlap)"),
    ],
    ids=["skipping", "standing-still"],
)
def test_pages_that_do_not_follow_on_are_refused_502(
    three_entries: ServerProc, by: Callable[[int, int], tuple[int, int]], said: str
) -> None:
    """(Before: 200, entry 0 alone, the rest of the log passed over unsaid.)"""
    with _web_behind(three_entries, paged_entries(by)) as (http, address):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["status"] == "BAD_GATEWAY", error
        assert said in error["message"], error
        assert "paging is broken or hostile" in error["message"], error
        assert address not in error["message"], error  # the operator's, logged
        # in a reader's words, not the RPC's (before: "sent a GetEntries page of ...")
        assert "GetEntries" not in error["message"], error
        assert "pages of the log that do not follow on" in error["message"], error
        page = http.get("/log")
        assert page.status_code == 502 and said in page.text, page.text
        assert "GetEntries" not in page.text, page.text


def _ends_early(start: int, n: int) -> tuple[int, int]:
    """Entry 0 alone, then empty pages from entry 1 on, as if the log ended there."""
    return (min(n, 1), start + min(n, 1)) if start == 0 else (0, start)


def test_a_page_ending_the_log_before_its_checkpoint_is_refused_502(
    three_entries: ServerProc,
) -> None:
    """An empty page from an index the log's signed checkpoint holds is no end of the
    log: the service lost entries or its paging is broken. (Before: 200, entry 0 alone,
    from /api/v1/entries and /log, the listing silently cut.)"""
    with _web_behind(three_entries, paged_entries(_ends_early)) as (http, address):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["status"] == "BAD_GATEWAY", error
        said = "ended the log early: it sent no entries from index 1, though the log's signed"
        assert said in error["message"] and "checkpoint holds 3" in error["message"], error
        assert address not in error["message"] and "GetEntries" not in error["message"]
        page = http.get("/log")
        assert page.status_code == 502 and "ended the log early" in page.text, page.text
        # at the checkpoint's size an empty page is the log's end
        r = http.get("/api/v1/entries", params={"start": "3", "limit": "100"})
        assert r.status_code == 200 and r.json() == {"start": 3, "entries": []}, r.text


@pytest.mark.parametrize("next_after", [False, True], ids=["next-as-asked", "next-after"])
def test_a_page_of_more_entries_than_asked_for_is_refused_502(
    three_entries: ServerProc, next_after: bool
) -> None:
    """(Before: 502 "it would serve entry 1 again (pages overlap)" when the page's
    ``next`` counted the entries asked for, though no page had come before it; 200 and
    the first entry when ``next`` counted those sent.)"""
    with _web_behind(three_entries, overfull_entries(next_after)) as (http, _):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "1"})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert "sent 2 entries where at most 1 was asked for" in error["message"], error
        assert "overlap" not in error["message"], error


#: `prov web --service-timeout` of `test_a_listing_is_answered_within_one_service_timeout`
#: (seconds), and how long its relay holds each GetEntries page: each page well within
#: it, the three pages of the log together past it.
_TIMEOUT_S = 2.0
_PAGE_S = 0.6 * _TIMEOUT_S


def _slow_one_a_page(start: int, n: int) -> tuple[int, int]:
    """`_one_a_page`, each page sent after `_PAGE_S` (a slow service, not a wait for
    anything: the test needs only that the pages together take longer than the web's
    service timeout, which the sleeps ensure however loaded the machine is)."""
    time.sleep(_PAGE_S)
    return _one_a_page(start, n)


def test_a_listing_is_answered_within_one_service_timeout(three_entries: ServerProc) -> None:
    """A service that sends one entry a page, each within --service-timeout, cannot hold
    a listing (a web worker thread and the visitor) for a timeout a page: 100 pages of
    20 s were 33 minutes (`entries_view`). (Before: 200, all three entries, after four
    pages of 1.2 s, the last one empty, with a 2 s --service-timeout.)"""
    args = ("--service-timeout", f"{_TIMEOUT_S:g}")
    with _web_behind(three_entries, paged_entries(_slow_one_a_page), *args) as (http, address):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 504, r.text
        error: dict[str, Any] = r.json()["error"]
        assert error["status"] == "DEADLINE_EXCEEDED", error
        assert f"did not answer within {_TIMEOUT_S:g} s" in error["message"], error
        assert address not in error["message"], error
        assert r.headers.get("retry-after"), r.headers
        page = http.get("/log")  # its three newest entries, as slowly
        assert page.status_code == 504, page.text
        assert f"did not answer within {_TIMEOUT_S:g} s" in page.text, page.text
        assert address not in page.text, page.text


#: Full names of the calls a listing makes to learn the log's size (`_log_size`).
_SIZE_CALLS = ("/provenance.v1.Log/GetLogKey", "/provenance.v1.Log/GetCheckpoint")

#: `prov web --service-timeout` of `test_the_size_read_after_an_empty_page_gets_the_time_left`
#: and how long its relay holds the empty page (seconds): 2.5 s left for the size read,
#: room for a loaded machine to bring the page within the timeout.
_SIZE_TIMEOUT_S, _SIZE_PAGE_S = 4.0, 1.5


@pytest.mark.parametrize("stalled", _SIZE_CALLS, ids=["log-key", "checkpoint"])
def test_the_size_read_after_an_empty_page_gets_the_time_left(
    three_entries: ServerProc, stalled: str
) -> None:
    """A listing that comes to an empty page reads the log's signed size (`_log_size`):
    that read gets what is left of the listing's one --service-timeout, not a whole one
    more. The relay sends the empty page at the log's end after `_SIZE_PAGE_S` of the
    `_SIZE_TIMEOUT_S`, then, once armed (after the web's start-up probe), stalls
    ``stalled``, noting the deadline each such call came with. (Before, with a 2 s
    timeout and the page held 1.2 s: that call came with the whole 2 s, 2.009 s noted,
    so a service stalling it held the listing for the page's time and a whole timeout
    more.)"""
    armed, released = threading.Event(), threading.Event()
    deadlines: list[float | None] = []

    def slow_end(start: int, n: int) -> tuple[int, int]:
        time.sleep(_SIZE_PAGE_S)  # a slow service: only the time it takes is needed
        return n, start + n

    def stall(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        if not armed.is_set():
            return forward(request)
        deadlines.append(context.time_remaining())
        released.wait(60)
        return b""  # its caller gave up long since

    args = ("--service-timeout", f"{_SIZE_TIMEOUT_S:g}")
    more: dict[str, RelayAnswer] = {stalled: stall}
    try:
        with _web_behind(three_entries, paged_entries(slow_end), *args, more=more) as (
            http,
            address,
        ):
            armed.set()
            r = http.get("/api/v1/entries", params={"start": "3", "limit": "100"})
            assert r.status_code == 504, r.text
            error: dict[str, Any] = r.json()["error"]
            assert f"did not answer within {_SIZE_TIMEOUT_S:g} s" in error["message"], error
            assert address not in error["message"], error
    finally:
        released.set()
    # at most the timeout less the page's time, 2.5 s (0.5 s more for gRPC's rounding)
    most = _SIZE_TIMEOUT_S - _SIZE_PAGE_S + 0.5
    assert deadlines and all(d is not None and d < most for d in deadlines), deadlines


#: GetCheckpoint's full name, for a relay answering it.
_GET_CHECKPOINT = _SIZE_CALLS[1]


def _said_empty(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
    """A relay's GetCheckpoint answer: "the log is empty", as an honest server answers
    only while its log has no entry."""
    context.abort(grpc.StatusCode.OUT_OF_RANGE, "the log is empty: no checkpoint yet")
    raise AssertionError("abort returns only by raising")


def test_a_service_saying_its_log_is_empty_after_sending_entries_is_refused_502(
    three_entries: ServerProc,
) -> None:
    """A service that sent entry 0, then an empty page from entry 1, then says its log is
    empty (no signed checkpoint needed) has not ended the log: an empty log has no entry
    0. (Before: 200, entry 0 alone, the listing silently cut without even a checkpoint.)"""
    more: dict[str, RelayAnswer] = {_GET_CHECKPOINT: _said_empty}
    with _web_behind(three_entries, paged_entries(_ends_early), more=more) as (http, address):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["status"] == "BAD_GATEWAY", error
        message = error["message"]
        assert "ended the log early: it sent no entries from index 1" in message, error
        assert "though it says the log is empty" in message and address not in message, error


def _tampered(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
    """A relay's GetCheckpoint answer: the real server's signed checkpoint with its tree
    size changed to 1, its signature left as it was."""
    page = pb.GetCheckpointResponse.FromString(forward(request))
    origin, _, rest = page.checkpoint.partition("\n")
    page.checkpoint = origin + "\n1\n" + rest.partition("\n")[2]
    return bytes(page.SerializeToString())


def test_a_checkpoint_the_log_key_does_not_sign_is_refused_502(
    three_entries: ServerProc,
) -> None:
    """A checkpoint whose size was changed after the log key signed it is the service's
    evidence failing, a 502 saying so, wherever the page reads it: the listing's size
    read after an empty page (its size not trusted), /api/v1/checkpoint, /log. (Before:
    500 INTERNAL "note signature by media-provenance.local/log does not verify", as if
    the page itself were broken.)"""
    more: dict[str, RelayAnswer] = {_GET_CHECKPOINT: _tampered}
    with _web_behind(three_entries, paged_entries(_ends_early), more=more) as (http, address):
        for path, params in [
            ("/api/v1/entries", {"start": "0", "limit": "100"}),
            ("/api/v1/checkpoint", {}),
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 502, (path, r.text)
            error = r.json()["error"]
            assert error["status"] == "BAD_GATEWAY", error
            said = "sent a checkpoint that does not verify with the log key it presents"
            assert said in " ".join(error["message"].split()), error
            assert address not in error["message"], error
        page = http.get("/log")
        assert page.status_code == 502 and "does not verify with the log key" in page.text


def test_a_checkpoint_behind_the_entries_sent_ends_the_listing_without_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """An honest log can answer the size read after the last page with a signed
    checkpoint older than the entries it sent: with several servers over one PostgreSQL,
    one whose database does not answer serves the checkpoint it holds (`StoreReads`)
    while another served the newer entries. That ends the listing, all its entries
    shown, no 502 (a guard, not failing first: it held before and after h-revpage60).
    The relay answers GetCheckpoint with the log's genuine checkpoint of size 1, read
    before the two captures were logged."""
    channel = grpc.insecure_channel(server.address)
    try:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_GET_CHECKPOINT)
        older = bytes(call(pb.GetCheckpointRequest().SerializeToString(), timeout=60))
    finally:
        channel.close()
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")

    def held(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        return older

    more: dict[str, RelayAnswer] = {_GET_CHECKPOINT: held}
    with _web_behind(server, paged_entries(_one_a_page), more=more) as (http, _):
        r = http.get("/api/v1/entries", params={"start": "0", "limit": "100"})
        assert r.status_code == 200, r.text
        assert [e["index"] for e in r.json()["entries"]] == [0, 1, 2], r.text


def own_key_rollback(server: ServerProc) -> tuple[str, str, LogSigner, str]:
    """(the real log's key, its origin, a key of a relay's own under that origin, a
    checkpoint note it signs with that key over the real log's first 2 of its 3 entries:
    the third hidden, a rollback any client trusting the presented key takes)."""
    with ProvenanceClient(server.address, timeout=60) as c:
        real, origin = c.log_key()
        data, _ = c.entries(0, 2)
    tree = merkle.CompactRange()
    for entry in data:
        tree.append(merkle.leaf_hash(entry))
    signer = LogSigner(Ed25519PrivateKey.generate(), origin)
    now = datetime.now(UTC).replace(microsecond=0)
    return real, origin, signer, signer.sign(Checkpoint(origin, len(data), tree.root(), now))


def _own_key_log(server: ServerProc) -> tuple[str, dict[str, RelayAnswer]]:
    """(the real log's key, a relay's answers): GetLogKey answered with a key of the
    relay's own under the real log's origin, GetCheckpoint with its rollback checkpoint
    signed with that key (`own_key_rollback`)."""
    real, origin, signer, note = own_key_rollback(server)

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=signer.verifier_key(), origin=origin)
        return bytes(answer.SerializeToString())

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        return bytes(pb.GetCheckpointResponse(checkpoint=note).SerializeToString())

    return real, {_SIZE_CALLS[0]: log_key, _GET_CHECKPOINT: checkpoint}


def test_with_a_pinned_log_key_the_log_pages_refuse_a_checkpoint_it_does_not_sign(
    three_entries: ServerProc,
) -> None:
    """`prov web --log-key KEY`: the explorer and the log API check every checkpoint
    they read with the pinned key, not the one the service presents; a service
    presenting a key of its own and signing its own checkpoint with it is a 502 naming
    the pinned key. (Before h-pinkey60: 200 with the relay's checkpoint of 2 entries and
    its key, as if the pinned key were not there.) An honest service under the same pin:
    200, the log's 3 entries under the pinned key."""
    real, more = _own_key_log(three_entries)
    said = f"does not verify with the log key pinned with --log-key ({real})"
    with _web_behind(three_entries, paged_entries(_one_a_page), "--log-key", real, more=more) as (
        http,
        address,
    ):
        for path, params in [
            ("/api/v1/checkpoint", {}),
            ("/api/v1/entries/0", {}),
            ("/api/v1/proofs/consistency", {"first": "1"}),
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 502, (path, r.text)
            error = r.json()["error"]
            assert error["status"] == "BAD_GATEWAY", error
            assert said in " ".join(error["message"].split()), error
            assert address not in error["message"], error
        for path in ["/log", "/log/entries/0", "/log/consistency?first=1"]:
            page = http.get(path)
            assert page.status_code == 502, (path, page.text)
            assert "pinned with --log-key" in page.text, page.text
    honest = start_web(three_entries.address, "--log-key", real)
    try:
        with httpx.Client(base_url=honest.address, timeout=120) as http:
            r = http.get("/api/v1/checkpoint")
            assert r.status_code == 200, r.text
            assert r.json()["log_key"] == real and r.json()["size"] == 3, r.text
            assert http.get("/log").status_code == 200
    finally:
        honest.stop()
