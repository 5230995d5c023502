"""Hostile Lookups against a real gRPC server: a malformed content hash gets its own
specific error, and an error echoing a caller's very long field still reaches the caller
as its own status (not as the transport's "Stream removed")."""

from __future__ import annotations

import os

import grpc
import pytest

from clients.scan.hashing import Measured
from provenance.server.rpc import MAX_DETAILS_CHARS
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.test_lookup_batch import _query, desk, served  # noqa: F401  (fixtures)


def test_a_malformed_content_hash_is_refused_on_its_own_row(
    served: str,  # noqa: F811
    desk: list[Measured],  # noqa: F811
) -> None:
    good = [_query(m) for m in desk]
    bad = pb.LookupQuery(ref="c31", sha256=os.urandom(32), content_sha256=b"\x01" * 31)
    with grpc.insecure_channel(served) as ch:
        stub = rpc.VerificationStub(ch)
        reply = stub.Lookup(
            pb.LookupRequest(queries=[*good, bad, *good], per_query_errors=True), timeout=60
        )
        errors = [(r.ref, r.error_code, r.error) for r in reply.results if r.error]
        assert errors == [
            (
                "c31",
                "INVALID_ARGUMENT",
                "query 'c31': content_sha256 must be empty or 32 bytes, got 31",
            )
        ]
        assert sum(r.HasField("report") for r in reply.results) == 2 * len(good)


def test_an_error_echoing_a_long_ref_keeps_its_status(served: str) -> None:  # noqa: F811
    ref = "r" * 200_000
    with grpc.insecure_channel(served) as ch:
        stub = rpc.VerificationStub(ch)
        try:
            stub.Lookup(pb.LookupRequest(queries=[pb.LookupQuery(ref=ref)]), timeout=60)
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.INVALID_ARGUMENT, e.details()
            details = str(e.details())
        else:
            raise AssertionError("a 0-byte sha256 was accepted")
    assert details.startswith("query 'rrrr") and len(details) <= MAX_DETAILS_CHARS
    # the middle is cut, not the end: the end says what is wrong (h-att41: a path of a
    # few thousand characters left only "query '/archive/...... (5054 characters in all)")
    assert details.endswith("rrrr': sha256 must be 32 bytes, got 0"), details[-200:]
    whole = len(f"query {ref!r}: sha256 must be 32 bytes, got 0")
    assert f" of {whole} characters left out) ..." in details


def test_malformed_packed_pdq_hashes_are_refused_on_their_own_rows(
    served: str,  # noqa: F811
    desk: list[Measured],  # noqa: F811
) -> None:
    """``pdq_dihedral`` holds whole 32-byte hashes, at most 8, of one quality in 0..100,
    and never comes with ``soft_bindings``; the field it replaced is refused, not ignored:
    anything else is that query's INVALID_ARGUMENT (the rest of the call answered), or the
    whole call's without ``per_query_errors``."""
    good = [_query(m) for m in desk]
    photo = next(q for q in good if q.pdq_dihedral)

    def packed(ref: str, data: bytes, quality: int = 90) -> pb.LookupQuery:
        return pb.LookupQuery(
            ref=ref, sha256=os.urandom(32), pdq_dihedral=data, pdq_quality=quality
        )

    old = pb.LookupQuery(ref="old", sha256=os.urandom(32))  # as a scanner of 1-4 December
    old.soft_bindings.add(algorithm="pdq", hash=os.urandom(32), quality=90)
    old.dihedral_soft_bindings.add(algorithm="pdq", hash=os.urandom(32), quality=90)
    both = pb.LookupQuery()
    both.CopyFrom(photo)
    both.ref = "both"
    both.soft_bindings.add(algorithm="pdq", hash=os.urandom(32), quality=90)
    bad = [
        packed("p31", os.urandom(31)),
        packed("p33", os.urandom(33)),
        packed("p9", os.urandom(9 * 32)),
        packed("p1000", os.urandom(1000)),
        packed("q101", os.urandom(8 * 32), 101),
        packed("q-1", os.urandom(32), -1),
        both,
        old,
    ]
    shape = "pdq_dihedral must hold whole 32-byte PDQ hashes, at most 8 (256 bytes), got {}"
    want = [
        ("p31", shape.format("31 bytes")),
        ("p33", shape.format("33 bytes")),
        ("p9", shape.format("288 bytes")),
        ("p1000", shape.format("1000 bytes")),
        ("q101", "malformed soft binding: PDQ quality must be in 0..100, got 101"),
        ("q-1", "malformed soft binding: PDQ quality must be in 0..100, got -1"),
        (
            "both",
            "an image's PDQ hashes go packed in pdq_dihedral or in soft_bindings, not both",
        ),
        (
            "old",
            "dihedral_soft_bindings is no longer read: an image's 8 PDQ hashes go packed in"
            " pdq_dihedral (a scanner older than this server sends it: update the scanner)",
        ),
    ]
    one = packed("one", os.urandom(32))  # a single hash (no turns) is well formed
    with grpc.insecure_channel(served) as ch:
        stub = rpc.VerificationStub(ch)
        reply = stub.Lookup(
            pb.LookupRequest(queries=[*good, *bad, one, *good], per_query_errors=True),
            timeout=60,
        )
        errors = [(r.ref, r.error_code, r.error) for r in reply.results if r.error]
        assert errors == [(ref, "INVALID_ARGUMENT", f"query {ref!r}: {msg}") for ref, msg in want]
        assert sum(r.HasField("report") for r in reply.results) == 2 * len(good) + 1
        for q, (ref, msg) in zip(bad, want, strict=True):
            try:
                stub.Lookup(pb.LookupRequest(queries=[*good, q]), timeout=60)
            except grpc.RpcError as e:
                assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert e.details() == f"query {ref!r}: {msg}"
            else:
                raise AssertionError(f"{ref} was accepted")


def test_a_media_type_that_is_none_is_refused_on_its_own_row(
    served: str,  # noqa: F811
    desk: list[Measured],  # noqa: F811
) -> None:
    """A query's media_type is empty or an RFC 6838 type/subtype of at most 255
    characters: one holding a NUL or another control character, a space, parameters, or
    1 MB of text is that query's INVALID_ARGUMENT naming the field (before, each was
    taken silently and carried into its report); the honest queries beside it, and a
    255-character type, are answered."""
    good = [_query(m) for m in desk]
    longest = "video/" + "x" * 249
    rows = {
        "nul": ("image/jpeg\x00", "media_type 'image/jpeg\\x00' is not a media type"),
        "escape": ("image/\x1b[2J", "media_type 'image/\\x1b[2J' is not a media type"),
        "params": ("image/jpeg; q=1", "is not a media type (RFC 6838 type/subtype"),
        "huge": ("image/" + "j" * 1_000_000, "media_type is 1,000,006 characters; at most 255"),
    }
    bad = [
        pb.LookupQuery(ref=ref, sha256=os.urandom(32), media_type=media)
        for ref, (media, _) in rows.items()
    ]
    fine = pb.LookupQuery(ref="longest", sha256=os.urandom(32), media_type=longest)
    with grpc.insecure_channel(served) as ch:
        stub = rpc.VerificationStub(ch)
        reply = stub.Lookup(
            pb.LookupRequest(queries=[*good, *bad, fine], per_query_errors=True), timeout=60
        )
        errors = {r.ref: (r.error_code, r.error) for r in reply.results if r.error}
        assert sorted(errors) == sorted(rows), errors
        for ref, (_, words) in rows.items():
            code, error = errors[ref]
            assert code == "INVALID_ARGUMENT" and error.startswith(f"query {ref!r}: "), error
            assert words in error, error
        assert sum(r.HasField("report") for r in reply.results) == len(good) + 1
        with pytest.raises(grpc.RpcError) as got:  # without per_query_errors: the whole call
            stub.Lookup(pb.LookupRequest(queries=[*good, bad[0]]), timeout=60)
        assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
        assert "media_type 'image/jpeg\\x00' is not a media type" in str(got.value.details())
