"""Hostile Lookups against a real gRPC server: a malformed content hash gets its own
specific error, and an error echoing a caller's very long field still reaches the caller
as its own status (not as the transport's "Stream removed")."""

from __future__ import annotations

import os

import grpc

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
    whole = len(f"query {ref!r}: sha256 must be 32 bytes, got 0")
    assert details.endswith(f"... ({whole} characters in all)")
