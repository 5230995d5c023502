"""`POST /api/v1/lookup` parses and checks its JSON body off the event loop: while a body
is being parsed, the same web server answers other requests. Before, the parse and the
check of each query ran on the loop (about 0.2 s for a 4 MB body, measured), and every
other request waited.

No timed assertion: the parse of the marked body is held (a gate around `json.loads`, a
library function, wrapped, never replaced) until another request has been answered; on
the event loop that answer could never come while it is held, and the gate gives up after
`GATE_S` (only in that failure). A real `prov serve` (gRPC) and the real web app on a
loopback port. Also: a refused lookup's batch is freed by reference counting, not left
in a reference cycle for the garbage collector."""

from __future__ import annotations

import base64
import gc
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from clients.api import ProvenanceClient, Query
from provenance.web.api import JSON_WORKERS
from provenance.web.app import WebConfig
from provenance.web.guard import DEFAULT_LIMITS
from provenance.web.serve import WebServer
from provenance.web.serve import start_web as start_web_app
from tests.conftest import ServerProc

#: Seconds the gate holds a parse at the most (reached only when the loop is blocked).
GATE_S = 30.0
#: Seconds a binding lookup is held at the most, waiting for another to join it.
HOLD_S = 0.5
#: The ``ref`` that marks the body whose parse is held.
MARK = "held-parse"


@pytest.fixture
def web(server: ServerProc) -> Iterator[WebServer]:
    """The web app in this process (so the gate sees its parse), on conftest's server."""
    w = start_web_app("127.0.0.1:0", WebConfig(server.address))
    yield w
    w.stop()


def _holds_mark(s: Any) -> bool:
    """Whether ``s``, given to `json.loads`, is a marked lookup body (bytes or the text
    `loads_text` decodes them to)."""
    if isinstance(s, bytes | bytearray):
        return MARK.encode() in s
    return isinstance(s, str) and MARK in s


def _body(n: int, ref: str = "q") -> bytes:
    query = {"sha256": "ab" * 32, "pdq": [{"hash": "cd" * 32, "quality": 90}]}
    queries = [{**query, "ref": f"{ref}{i}"} for i in range(n)]
    return json.dumps({"queries": [{**queries[0], "ref": ref}, *queries[1:]]}).encode()


def test_other_requests_are_answered_while_a_lookup_body_is_parsed(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loads: Callable[..., Any] = json.loads
    parsing, answered = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def gated_loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        if _holds_mark(s):
            seen["thread"] = threading.current_thread().name
            parsing.set()
            seen["released_by_answer"] = answered.wait(GATE_S)
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", gated_loads)
    results: dict[str, httpx.Response] = {}

    def post() -> None:
        with httpx.Client(base_url=f"http://{web.address}", timeout=2 * GATE_S) as c:
            results["lookup"] = c.post("/api/v1/lookup", content=_body(50, MARK))

    poster = threading.Thread(target=post)
    poster.start()
    try:
        assert parsing.wait(GATE_S), "the lookup body was never parsed"
        with httpx.Client(base_url=f"http://{web.address}", timeout=2 * GATE_S) as c:
            other = c.get("/services/supportedAlgorithms")
        answered.set()
    finally:
        answered.set()
        poster.join()
    assert other.status_code == 200, other.text
    assert seen["released_by_answer"], "the other request waited for the parse"
    assert web.thread is not None and seen["thread"] != web.thread.name, seen  # a worker
    lookup = results["lookup"]
    assert lookup.status_code == 200, lookup.text
    assert [r["ref"] for r in lookup.json()["results"]][:2] == [MARK, f"{MARK}1"]


def test_a_refused_lookup_leaves_no_cycle_holding_its_batch(web: WebServer) -> None:
    """A batch the service refuses (over --max-lookup-queries): its `Query` objects are
    freed when the answer is sent. Before, the error's traceback kept the batch in a
    reference cycle (through the worker thread's future) until a full collection: 20,000
    queries of a 4 MB body made a 30-100 ms pause of every thread, once per request."""
    with httpx.Client(base_url=f"http://{web.address}", timeout=60) as c:
        c.get("/services/supportedAlgorithms")
        gc.collect()
        gc.disable()
        try:
            refused = c.post("/api/v1/lookup", content=_body(1500))
            assert refused.status_code == 413, refused.text
            c.get("/services/supportedAlgorithms")  # the refused call has fully returned
            # type(), not isinstance(): isinstance reads __class__, which warns on torch's
            # deprecated module attributes found among the objects
            left = sum(type(o) is Query for o in gc.get_objects())
        finally:
            gc.enable()
    assert left == 0, f"{left} queries of the refused batch are still held"


def test_lookups_past_the_json_workers_wait_and_leave_other_routes_their_threads(
    server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most `JSON_WORKERS` lookup bodies are parsed (and looked up) at once; the rest
    wait, holding no thread, and the threads the other routes use stay free: with 41
    lookups held in their parse (more than the 40 threads Starlette's routes share), GET
    /api/v1/checkpoint is still answered. Before, each lookup took one of those threads:
    41 held parses left none to the checkpoint (and 32 concurrent 4 MB lookups from one
    client kept another client's checkpoint waiting 6-9 s, measured)."""
    real_loads: Callable[..., Any] = json.loads
    lock = threading.Lock()
    inside = [0, 0]  # parses held now, the most at once
    parsing, answered = threading.Event(), threading.Event()
    released: list[bool] = []

    def gated_loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        if _holds_mark(s):
            with lock:
                inside[0] += 1
                inside[1] = max(inside)
                if inside[0] >= JSON_WORKERS:
                    parsing.set()
            released.append(answered.wait(GATE_S))
            with lock:
                inside[0] -= 1
        return real_loads(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", gated_loads)
    w = start_web_app(
        "127.0.0.1:0", WebConfig(server.address), replace(DEFAULT_LIMITS, per_client=64)
    )
    codes: list[int] = []

    def post() -> None:
        with httpx.Client(base_url=f"http://{w.address}", timeout=4 * GATE_S) as c:
            codes.append(c.post("/api/v1/lookup", content=_body(5, MARK)).status_code)

    posters = [threading.Thread(target=post) for _ in range(41)]
    try:
        for t in posters:
            t.start()
        assert parsing.wait(GATE_S), "no lookup body was parsed"
        with httpx.Client(base_url=f"http://{w.address}", timeout=4 * GATE_S) as c:
            for _ in range(3):  # the loop takes in the other lookups meanwhile
                assert c.get("/services/supportedAlgorithms").status_code == 200
            other = c.get("/api/v1/checkpoint")
        answered.set()
    finally:
        answered.set()
        for t in posters:
            t.join()
        w.stop()
    # the service's answer (on a worker thread): nothing is logged on this server yet
    assert other.status_code == 404 and "the log is empty" in other.text, other.text
    assert all(released), "the checkpoint waited for the held lookups' threads"
    assert inside[1] <= JSON_WORKERS, f"{inside[1]} lookup bodies were parsed at once"
    assert codes == [200] * 41, codes


def test_soft_binding_lookups_run_on_the_json_workers_in_turn(
    server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /matches/byBinding (the C2PA Soft Binding Resolution API) asks the service on
    one of the `JSON_WORKERS`, in its client's turn, as POST /api/v1/lookup does: of 16
    binding queries sent at once, at most `JSON_WORKERS` are at the service together.
    Each call is held (wrapped, not replaced) until another joins it or `HOLD_S` passes,
    so calls let through together are seen together. Before, they ran on the 40 threads
    the routes share, outside the turns: 16 at once, and while 16 connections of one
    address asked for bindings another address's one-query lookup waited for 13-25 of
    their answers (3-5 after)."""
    real_lookup = ProvenanceClient.lookup
    lock = threading.Lock()
    inside = [0, 0]  # calls at the service now, the most at once
    joined = threading.Condition(lock)

    def counted_lookup(self: ProvenanceClient, queries: Any) -> Any:
        with lock:
            inside[0] += 1
            inside[1] = max(inside)
            joined.notify_all()
            joined.wait_for(lambda: inside[0] > JSON_WORKERS, timeout=HOLD_S)
        try:
            return real_lookup(self, queries)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(ProvenanceClient, "lookup", counted_lookup)
    w = start_web_app(
        "127.0.0.1:0", WebConfig(server.address), replace(DEFAULT_LIMITS, per_client=64)
    )
    value = base64.b64encode(bytes(range(32))).decode()
    codes: list[int] = []
    start = threading.Barrier(16)

    def ask() -> None:
        with httpx.Client(base_url=f"http://{w.address}", timeout=4 * GATE_S) as c:
            start.wait()
            codes.append(
                c.get("/matches/byBinding", params={"alg": "pdq", "value": value}).status_code
            )

    askers = [threading.Thread(target=ask) for _ in range(16)]
    try:
        for t in askers:
            t.start()
        for t in askers:
            t.join()
    finally:
        w.stop()
    assert codes == [200] * 16, codes
    assert inside[1] <= JSON_WORKERS, f"{inside[1]} binding lookups were at the service at once"
