"""A row's report fields read straight from the Lookup's wire report equal those of the
domain report (`clients.scan.rows.report_json` against `clients.report.report_to_json`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clients.report import report_to_json
from clients.scan.rows import report_json
from provenance.core.binding import PerceptualHash
from provenance.core.claims import TimeFlag, Verdict
from provenance.core.verify import Evidence, FileFacts, VerificationReport
from provenance.wire import convert as wire

_FACTS = FileFacts(
    sha256=bytes(range(32)),
    size=5,
    media_type="image/jpeg",
    soft_bindings=(PerceptualHash("pdq", bytes(32), 90),),
    notes=("a note the server adds to the reasons",),
)


@pytest.mark.parametrize(
    ("status", "evidence", "when"),
    [
        (Verdict.UNSIGNED, Evidence(_FACTS), datetime(2026, 12, 2, 7, 0, 1, 250, tzinfo=UTC)),
        (
            Verdict.DERIVED,
            Evidence(
                _FACTS,
                hash_match=False,
                pdq_distance=12,
                pdq_threshold=31,
                pdq_transform="rotate_90_cw",
                damaged_ranges=((0, 9), (4096, 8191)),
                time_flags=(TimeFlag("captured_after_server_time", "in the future"),),
            ),
            datetime(1999, 1, 1, tzinfo=UTC),
        ),
        (
            Verdict.TAMPERED,
            Evidence(_FACTS, sidecar_present=True, hash_match=True, pdq_distance=0),
            datetime(2026, 12, 2, 7, 0, 1, 250, tzinfo=UTC),
        ),
    ],
)
def test_report_fields_from_the_wire_equal_the_domain_reports(
    status: Verdict, evidence: Evidence, when: datetime
) -> None:
    report = VerificationReport(status, ("first reason", "second"), evidence, when)
    m = wire.report_to_pb(report)
    full = report_to_json(wire.report_from_pb(m))
    want = {k: full[k] for k in ("status", "reasons", "evidence", "verified_at")}
    got = report_json(m)
    assert got == want
    assert list(got["evidence"]) == list(want["evidence"])  # same keys, same JSON order
    assert report_json(m) == want  # again, from the cached time


def test_a_report_with_more_than_the_usual_fields_goes_the_long_way() -> None:
    report = VerificationReport(
        Verdict.UNSIGNED,
        (),
        Evidence(_FACTS),
        datetime(2026, 12, 2, tzinfo=UTC),
        detector={"available": False, "note": "not scored"},
    )
    m = wire.report_to_pb(report)
    full = report_to_json(wire.report_from_pb(m))
    assert report_json(m) == {k: full[k] for k in ("status", "reasons", "evidence", "verified_at")}


def test_shared_parts_follow_every_field_of_the_report() -> None:
    """Equal plain reports share their reasons and evidence, and a report differing in any
    one field (a reason, the sidecar, the hash match, the distance, the threshold, the
    transform) gets its own, equal to the domain report's; more kinds of answer than the
    cache holds are all still right."""
    when = datetime(2026, 12, 2, 7, 0, 1, tzinfo=UTC)
    variants = [
        (("no match",), Evidence(_FACTS)),
        (("no match", "and another"), Evidence(_FACTS)),
        (("no match",), Evidence(_FACTS, sidecar_present=True)),
        (("no match",), Evidence(_FACTS, hash_match=True)),
        (("no match",), Evidence(_FACTS, pdq_distance=3)),
        (("no match",), Evidence(_FACTS, pdq_distance=3, pdq_threshold=20)),
        (("no match",), Evidence(_FACTS, pdq_distance=3, pdq_transform="flip_x")),
    ]
    variants += [((f"reason {k}",), Evidence(_FACTS, pdq_distance=k % 40)) for k in range(150)]
    for _ in range(2):
        for reasons, evidence in variants:
            m = wire.report_to_pb(VerificationReport(Verdict.UNSIGNED, reasons, evidence, when))
            full = report_to_json(wire.report_from_pb(m))
            assert report_json(m) == {
                k: full[k] for k in ("status", "reasons", "evidence", "verified_at")
            }
    m = wire.report_to_pb(VerificationReport(Verdict.UNSIGNED, ("x",), Evidence(_FACTS), when))
    first, second = report_json(m), report_json(m)
    assert first["evidence"] is second["evidence"] and first["reasons"] is second["reasons"]


def test_report_fields_follow_each_report_time() -> None:
    """A Lookup's results are built by `wire.report_fields`, which converts a time once for
    the reports that share it: reports at other times (and again at the first) still get
    their own, as `ts_to_pb` gives it."""
    times = [
        datetime(2026, 12, 4, 14, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 4, 14, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 4, 14, 0, 0, 2, tzinfo=UTC),
        datetime(1999, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 4, 14, 0, 0, 1, tzinfo=UTC),
    ]
    for when in times:
        fields = wire.report_fields(
            VerificationReport(Verdict.UNSIGNED, (), Evidence(_FACTS), when)
        )
        assert fields["verified_at"] == wire.ts_to_pb(when)
