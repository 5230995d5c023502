"""The log explorer's search by file hash (`/log/find?q=HEX`, `GET
/api/v1/entries?sha256=HEX`) holds the service's Lookup answer to `POST /api/v1/lookup`'s
checks and shows only the entry of the claim it cited (findsha60): a real relay citing
another capture's genuine claim, or sending another entry at the cited index, is a 502;
the real `prov serve`'s honest answers pass. A real `prov serve` logging real claims of a
real device, a real gRPC relay on a real port, a real `prov web`; no mocks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from provenance.v1 import provenance_pb2 as pb
from tests.conftest import GET_ENTRIES, Cli, RelayAnswer, ServerProc, relay, sign_sample
from tests.test_cited_binding import LOOKUP
from tests.test_web_cited import _web

#: What each refusal of a search says, in a reader's words.
_SAID = "the provenance service behind this page answered the search for the file SHA-256"


@contextmanager
def _behind(server: ServerProc, answers: dict[str, RelayAnswer]) -> Iterator[httpx.Client]:
    """An HTTP client of a real `prov web` whose service is a relay in front of
    ``server`` answering the methods of ``answers`` itself, while in the block."""
    with relay(server.address, answers) as address, _web(address) as http:
        yield http


def _two_captures(enrolled: Cli, tmp_path: Path) -> tuple[str, str]:
    """The file SHA-256s (hex) of two captures signed and logged: entries 1 and 2."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b, _ = sign_sample(enrolled, tmp_path, "chelsea.png")
    return hashlib.sha256(a.read_bytes()).hexdigest(), hashlib.sha256(b.read_bytes()).hexdigest()


def _found(http: httpx.Client, sha: str) -> dict[str, Any]:
    """The one entry the honest search for ``sha`` answers."""
    r = http.get("/api/v1/entries", params={"sha256": sha})
    assert r.status_code == 200, r.text
    [entry] = r.json()["entries"]
    assert entry["claim"]["sha256"] == sha, entry
    return dict(entry)


def _refused(http: httpx.Client, sha: str, words: str) -> None:
    """The page's and the API's search for ``sha`` are both a 502 saying ``words``."""
    r = http.get("/api/v1/entries", params={"sha256": sha})
    assert r.status_code == 502, r.text
    said = r.json()["error"]["message"]
    assert _SAID in said and words in said and "127.0.0.1" not in said, said
    page = http.get("/log/find", params={"q": sha}, follow_redirects=True)
    assert page.status_code == 502 and words in page.text, (page.status_code, page.text)


def test_honest_searches_pass(enrolled: Cli, server: ServerProc, tmp_path: Path) -> None:
    """The real service's answers through a relay: a capture's hash finds its entry (the
    page shows it: before h-webmono61 it redirected to the entry's page), a device id
    goes to its device page, an unknown hash is 404."""
    a, b = _two_captures(enrolled, tmp_path)
    with _behind(server, {}) as http:
        for sha in (a, b):
            index = _found(http, sha)["index"]
            page = http.get("/log/find", params={"q": sha})
            assert page.status_code == 200 and sha in page.text, page.text
            assert f"Log entry #{index}" in page.text, page.text
        device = _found(http, a)["claim"]["device_id"]
        r = http.get("/log/find", params={"q": device})
        assert r.status_code == 303 and r.headers["location"] == f"/log/devices/{device}"
        r = http.get("/api/v1/entries", params={"sha256": "ab" * 32})
        assert r.status_code == 404, r.text


def _asks_for(sha: str) -> RelayAnswer:
    """A relay's Lookup answer: the real service's genuine answer for the file SHA-256
    ``sha`` (hex) whatever hash was asked, as if of the hash asked."""

    def lookup(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.LookupRequest.FromString(request)
        sent = [q.sha256 for q in asked.queries]
        for q in asked.queries:
            q.sha256 = bytes.fromhex(sha)
        answer = pb.LookupResponse.FromString(forward(asked.SerializeToString()))
        for result, own in zip(answer.results, sent, strict=True):
            result.report.evidence.file_sha256 = own
        return bytes(answer.SerializeToString())

    return lookup


def test_a_lookup_citing_another_captures_claim_is_refused_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The relay answers the search for B's hash with the service's genuine
    SIGNED_ORIGINAL for A's (hash_match true, A's logged claim cited). Before
    (findsha60): 200, A's entry shown as the capture of B's bytes."""
    a, b = _two_captures(enrolled, tmp_path)
    with _behind(server, {LOOKUP: _asks_for(a)}) as http:
        _refused(http, b, f"that binds SHA-256 {a}, but the bytes sent have {b}")


def test_another_entry_at_the_cited_index_is_refused_502(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The lookup is answered honestly, but GetEntries sends A's entry as B's (at B's
    index). Before (findsha60): 200, A's entry shown as the capture of B's bytes."""
    a, b = _two_captures(enrolled, tmp_path)
    with _web(server.address) as http:
        ia, ib = _found(http, a)["index"], _found(http, b)["index"]

    def swapped(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.GetEntriesRequest.FromString(request)
        if asked.start != ib:
            return forward(request)
        other = pb.GetEntriesResponse.FromString(
            forward(pb.GetEntriesRequest(start=ia, limit=1).SerializeToString())
        )
        page = pb.GetEntriesResponse(entries=other.entries[:1], start=ib, next=ib + 1)
        return bytes(page.SerializeToString())

    with _behind(server, {GET_ENTRIES: swapped}) as http:
        _refused(
            http,
            b,
            f"cited the claim of log entry {ib}, but sent as entry {ib} another claim",
        )
