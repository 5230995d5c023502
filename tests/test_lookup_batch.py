"""The Lookup RPC answers a batch together (one store read by SHA-256 and one index search
for all of its files) and gives each file the report the one-file path gives; with
``per_query_errors`` a query it cannot answer gets its own error and the others their
reports. Real images, a real SQLite log, a real gRPC server on a loopback port."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients.api import ProvenanceClient, Query
from clients.scan.engines import LocalEngine
from clients.scan.hashing import Measured, measure
from clients.scan.pipeline import run_scan
from clients.scan.sources import FileItem
from clients.scan.worker import ScanConfig
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Verdict
from provenance.core.errors import LogIntegrityError
from provenance.core.verify import FileFacts, VerificationReport
from provenance.index.mih import MihIndex
from provenance.media.assets import AssetLimits
from provenance.server.pipeline import VerificationPipeline
from provenance.server.rpc import LOOKUP_PART_FILES, ServerConfig, create_server
from provenance.store.memory import MemoryStore
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import ADMIN_TOKEN, FIXTURES, SAMPLES
from tests.inproc import InProc

REAL = FIXTURES / "detector" / "real" / "afhq"


def _facts(m: Measured) -> FileFacts:
    """The facts the server builds from a scan's query for ``m``."""
    return FileFacts(
        sha256=m.sha256,
        size=0,
        media_type=m.media_type or "",
        content_sha256=m.content_sha256,
        soft_bindings=m.soft,
        dihedral_soft_bindings=wire.pdq_dihedral_from_pb(m.dihedral, m.soft[0].quality)[1:]
        if m.dihedral
        else (),
    )


@pytest.fixture
def desk(inproc: InProc, tmp_path: Path) -> list[Measured]:
    """Real files measured as `prov scan` measures them: two signed photos, a rotated and
    a shrunk copy of one, unsigned photos and a PNG, and a file that is not media; the
    signed ones logged in ``inproc``."""
    dev = inproc.enroll()
    files = {
        "rocket.jpg": (SAMPLES / "rocket.jpg").read_bytes(),
        "hopper.jpg": (SAMPLES / "grace_hopper.jpg").read_bytes(),
        "chelsea.png": (SAMPLES / "chelsea.png").read_bytes(),
        "cat.jpg": (REAL / "ref_cat_flickr_cat_000495.jpg").read_bytes(),
        "dog.jpg": (REAL / "ref_dog_flickr_dog_001072.jpg").read_bytes(),
        "notes.txt": b"caption: launch\n",
    }
    rocket = Image.open(io.BytesIO(files["rocket.jpg"])).convert("RGB")
    for name, im in {
        "rocket-turned.jpg": rocket.transpose(Image.Transpose.ROTATE_90),
        "rocket-small.jpg": rocket.resize((rocket.width // 2, rocket.height // 2)),
    }.items():
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        files[name] = buf.getvalue()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name in ("rocket.jpg", "hopper.jpg"):
        inproc.log_file(dev, tmp_path / name)
    limits = AssetLimits()
    return [measure(FileItem(n, str(tmp_path / n), len(d)), limits) for n, d in files.items()]


def test_a_batch_gets_the_reports_of_the_one_file_path(
    inproc: InProc, desk: list[Measured]
) -> None:
    facts = [_facts(m) for m in desk] * 2  # a file twice in a batch is answered twice
    one_by_one = [inproc.service.verify(f) for f in facts]
    assert inproc.service.verify_many(facts) == one_by_one
    status = {m.ref: r.status for m, r in zip(desk, one_by_one, strict=False)}
    assert status["rocket.jpg"] is Verdict.SIGNED_ORIGINAL
    assert status["rocket-turned.jpg"] is Verdict.DERIVED  # found by a dihedral hash
    assert status["rocket-small.jpg"] is Verdict.DERIVED
    assert status["dog.jpg"] is Verdict.UNSIGNED
    assert inproc.service.verify_many([]) == []


def test_turns_left_packed_get_the_answers_of_turns_built(
    inproc: InProc, desk: list[Measured]
) -> None:
    """The Lookup hands a photo's 7 turned hashes to `verify_many` packed, as they came
    (``packed_turns``), not built into its facts: the same answers on the wire, the
    rotated copy still found by one of them, with its turn."""
    facts = [_facts(m) for m in desk]
    lean = [
        replace(f, dihedral_soft_bindings=()) if m.dihedral else f
        for m, f in zip(desk, facts, strict=True)
    ]
    packed = [m.dihedral[32:] for m in desk]
    assert any(packed) and not all(packed)  # photos, and files with no pixels

    def wire_reports(reports: list[object]) -> list[pb.VerificationReport]:
        out = []
        for r in reports:
            assert isinstance(r, VerificationReport)
            msg = wire.report_to_pb(r)
            msg.ClearField("verified_at")
            out.append(msg)
        return out

    built = wire_reports(list(inproc.service.verify_many(facts)))
    found = inproc.service.verify_many(lean, packed)
    assert wire_reports(list(found)) == built
    turned = found[[m.ref for m in desk].index("rocket-turned.jpg")]
    assert isinstance(turned, VerificationReport)
    assert turned.status is Verdict.DERIVED and turned.evidence.pdq_transform
    alone = inproc.service.verify_many(lean)[[m.ref for m in desk].index("rocket-turned.jpg")]
    assert isinstance(alone, VerificationReport)
    assert alone.status is Verdict.UNSIGNED  # without them the turned copy is not found


def test_a_damaged_log_record_fails_only_its_own_file(inproc: InProc, desk: list[Measured]) -> None:
    facts = [_facts(m) for m in desk]
    rocket = next(f for m, f in zip(desk, facts, strict=True) if m.ref == "rocket.jpg")
    with sqlite3.connect(inproc.db) as db:
        db.execute("UPDATE leaves SET entry=? WHERE file_sha256=?", (b"\x00garbage", rocket.sha256))
    found = VerificationPipeline(inproc.service).lookup_many(facts)
    for m, f, r in zip(desk, facts, found, strict=True):
        if f.sha256 == rocket.sha256 or m.ref.startswith("rocket-"):  # near hits read it too
            assert isinstance(r, LogIntegrityError), m.ref
            assert "the log database is damaged" in str(r)
        else:
            assert not isinstance(r, LogIntegrityError), m.ref
            assert r == inproc.service.verify(f)


def test_a_lookup_says_it_did_not_check_an_embedded_claim(inproc: InProc) -> None:
    """A file carrying a C2PA manifest store may embed the claim `prov sign --c2pa` wrote,
    which `prov verify` checks as a sidecar (an edited export reads TAMPERED); a lookup by
    hashes cannot, and its reasons say so, as they say the manifest was not validated."""
    facts = FileFacts(b"\x01" * 32, 10, "image/jpeg", content_sha256=b"\x02" * 32)
    (report,) = VerificationPipeline(inproc.service).lookup_many([facts])
    assert not isinstance(report, LogIntegrityError)
    assert any("nor checks the signed claim they may embed" in r for r in report.reasons)


def test_the_index_searched_once_answers_as_each_search() -> None:
    idx = MihIndex()
    codes = [os.urandom(32) for _ in range(5000)]
    idx.add_many((i, PerceptualHash("pdq", c, 90)) for i, c in enumerate(codes))
    idx.search(PerceptualHash("pdq", codes[0], 90))  # builds the tables
    idx.add(99_999, PerceptualHash("pdq", codes[1], 90))  # a pending code, scanned
    flipped = bytes([codes[2][0] ^ 0x0F]) + codes[2][1:]
    queries = [
        PerceptualHash("pdq", codes[1], 90),
        PerceptualHash("pdq", flipped, 90),
        PerceptualHash("pdq", codes[3], 10),  # too low a quality: matches nothing
        PerceptualHash("pdq", os.urandom(32), 90),
    ]
    assert idx.search_many(queries) == [idx.search(q) for q in queries]
    assert idx.search_many(queries)[0][:2] == [(0, 1), (0, 99_999)]
    assert idx.search_many(queries)[2] == []
    assert MihIndex().search_many(queries) == [[], [], [], []]


def test_the_store_reads_many_hashes_as_each(inproc: InProc, desk: list[Measured]) -> None:
    # a hash sharing its first bytes (the store's index key) with a logged one is not it
    shas = [m.sha256 for m in desk] + [os.urandom(32), desk[0].sha256[:8] + os.urandom(24)]
    sql = inproc.service.store
    want = {h: sql.leaves_by_file_sha256(h) for h in shas if sql.leaves_by_file_sha256(h)}
    assert sql.leaves_by_file_sha256_many(shas) == want
    assert len(want) == 2
    mem = MemoryStore()
    assert mem.leaves_by_file_sha256_many(shas) == {}


@pytest.fixture
def served(inproc: InProc) -> Iterator[str]:
    server, port = create_server(
        "127.0.0.1:0", inproc.service, ServerConfig(admin_token=ADMIN_TOKEN)
    )
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _query(m: Measured) -> pb.LookupQuery:
    """The query `prov scan` sends for ``m``: a photo's 8 hashes packed."""
    if m.dihedral:
        return pb.LookupQuery(
            ref=m.ref,
            sha256=m.sha256,
            media_type=m.media_type or "",
            pdq_dihedral=m.dihedral,
            pdq_quality=m.soft[0].quality,
        )
    return pb.LookupQuery(
        ref=m.ref,
        sha256=m.sha256,
        media_type=m.media_type or "",
        soft_bindings=[wire.soft_to_pb(h) for h in m.soft],
    )


def test_per_query_errors_answer_the_rest_of_the_batch(
    served: str, inproc: InProc, desk: list[Measured]
) -> None:
    good = [_query(m) for m in desk]
    short = pb.LookupQuery(ref="short-sha", sha256=b"\x01" * 31)
    bad_hash = pb.LookupQuery(
        ref="bad-quality",
        sha256=desk[0].sha256,
        soft_bindings=[wire.soft_to_pb(h) for h in desk[0].soft],
    )
    bad_hash.soft_bindings[0].quality = 101
    too_many = pb.LookupQuery(
        ref="too-many",
        sha256=os.urandom(32),
        soft_bindings=[pb.SoftBinding(algorithm="pdq", hash=os.urandom(32), quality=90)] * 4097,
    )
    # more than one part of LOOKUP_PART_FILES files, the bad ones spread over them
    queries = good * 5 + [short] + good * 2 + [bad_hash, too_many] + good * 2
    assert len(queries) > 2 * LOOKUP_PART_FILES
    with grpc.insecure_channel(served) as ch:
        stub = rpc.VerificationStub(ch)
        reply = stub.Lookup(pb.LookupRequest(queries=queries, per_query_errors=True), timeout=60)
        # an old client (no per_query_errors) still gets the whole call refused
        with pytest.raises(grpc.RpcError) as e:
            stub.Lookup(pb.LookupRequest(queries=queries), timeout=60)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "query 'short-sha': sha256 must be 32 bytes, got 31" in str(e.value.details())
    assert [r.ref for r in reply.results] == [q.ref for q in queries]
    errors = {r.ref: (r.error_code, r.error) for r in reply.results if r.error}
    assert errors == {
        "short-sha": ("INVALID_ARGUMENT", "query 'short-sha': sha256 must be 32 bytes, got 31"),
        "bad-quality": (
            "INVALID_ARGUMENT",
            "query 'bad-quality': malformed soft binding: PDQ quality must be in 0..100, got 101",
        ),
        "too-many": (
            "INVALID_ARGUMENT",
            "query 'too-many' has 4097 perceptual hashes; a query holds at most 4096"
            " (one file's sampled video frames; a claim at most 1000)",
        ),
    }
    want = {m.ref: inproc.service.verify(_facts(m)).status for m in desk}
    for r in reply.results:
        if not r.error:
            assert r.HasField("report")
            assert wire.report_from_pb(r.report).status is want[r.ref]
    # the client's per-query answers
    with ProvenanceClient(served) as c:
        got = c.lookup_each(
            [Query("x.jpg", b"\x02" * 31), Query(desk[0].ref, desk[0].sha256, desk[0].soft)]
        )
    (ref0, err), (ref1, report) = got
    assert ref0 == "x.jpg" and getattr(err, "code", None) == "INVALID_ARGUMENT"
    assert "the server could not look it up: query 'x.jpg': sha256 must be 32 bytes" in str(err)
    assert ref1 == desk[0].ref and getattr(report, "status", None) is Verdict.SIGNED_ORIGINAL


def test_a_scan_reports_a_damaged_record_on_its_row_and_scans_the_rest(
    served: str, inproc: InProc, desk: list[Measured], tmp_path: Path
) -> None:
    rocket = next(m for m in desk if m.ref == "rocket.jpg")
    with sqlite3.connect(inproc.db) as db:
        db.execute("UPDATE leaves SET entry=? WHERE file_sha256=?", (b"\x00garbage", rocket.sha256))
    out = tmp_path / "scan.jsonl"
    names = ["rocket.jpg", "hopper.jpg", "dog.jpg", "chelsea.png"]
    run_scan([str(tmp_path / n) for n in names], out, ScanConfig(server=served), LocalEngine(0))
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["rocket.jpg"]["status"] is None
    assert rows["rocket.jpg"]["sha256"] == rocket.sha256.hex()
    assert rows["rocket.jpg"]["error"].startswith(
        "the server could not look it up: log entry 1 or its receipt does not verify"
    )
    assert [rows[n]["status"] for n in names[1:]] == ["SIGNED_ORIGINAL", "UNSIGNED", "UNSIGNED"]
    assert all(rows[n]["error"] is None for n in names[1:])
