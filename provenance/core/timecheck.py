"""Time sanity: device clocks are evidence, not truth.

A claim's ``captured_at`` comes from the device's clock. The log accepts any capture
time a timestamp can hold (it cannot know the device's clock was wrong) but the verdict
flags a capture time that lies more than `CAPTURE_TIME_TOLERANCE` ahead of the server's
clock when the log integrated the claim (or, for a claim never logged, when it was
verified), or more than that before the device's key was enrolled. A flag never changes
the status; it is listed in the evidence (``time_flags``) and in the reasons.

Revocation times come from an operator and must not lie in the future: a revocation
takes effect now or earlier (`check_revocation_time`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from provenance.core.claims import TimeFlag
from provenance.core.errors import ClaimError
from provenance.core.registry import unprintable
from provenance.core.verify import VerificationReport

#: A capture time more than this far ahead of the server's clock (or before the device's
#: enrollment) is flagged in the evidence.
CAPTURE_TIME_TOLERANCE = timedelta(hours=24)
#: How far ahead of the server's clock an operator's revocation time may lie (clock skew
#: between the operator's machine and the server).
REVOCATION_CLOCK_SKEW = timedelta(minutes=5)

#: Flag codes, as they appear in the evidence.
CAPTURED_AFTER_SERVER_TIME = "captured_after_server_time"
CAPTURED_BEFORE_ENROLLMENT = "captured_before_enrollment"


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:,.1f} hours" if hours < 72 else f"{hours / 24:,.0f} days"


def capture_time_flags(
    captured_at: datetime,
    enrolled_at: datetime | None,
    integrated_at: datetime | None,
    verified_at: datetime,
) -> tuple[TimeFlag, ...]:
    """Flags for a claim's capture time (all times timezone-aware UTC).

    ``integrated_at``: the log's integration time (None: the claim was never logged, so
    ``verified_at`` is the server time compared with); ``enrolled_at``: when the device's
    key was enrolled (None: unknown device).
    """
    flags: list[TimeFlag] = []
    server_time, when = (
        (integrated_at, "when the log recorded the claim")
        if integrated_at is not None
        else (verified_at, "at verification")
    )
    if captured_at - server_time > CAPTURE_TIME_TOLERANCE:
        flags.append(
            TimeFlag(
                CAPTURED_AFTER_SERVER_TIME,
                f"the capture time {captured_at:%Y-%m-%d %H:%M:%S} UTC (device clock) is"
                f" {_span(captured_at - server_time)} ahead of the server's clock {when}"
                f" (tolerance {_span(CAPTURE_TIME_TOLERANCE)}): the device clock was wrong"
                " or the time was made up",
            )
        )
    if enrolled_at is not None and enrolled_at - captured_at > CAPTURE_TIME_TOLERANCE:
        flags.append(
            TimeFlag(
                CAPTURED_BEFORE_ENROLLMENT,
                f"the capture time {captured_at:%Y-%m-%d %H:%M:%S} UTC (device clock) is"
                f" {_span(enrolled_at - captured_at)} before the device's key was enrolled"
                f" ({enrolled_at:%Y-%m-%d %H:%M:%S} UTC; tolerance"
                f" {_span(CAPTURE_TIME_TOLERANCE)})",
            )
        )
    return tuple(flags)


def with_time_flags(report: VerificationReport) -> VerificationReport:
    """``report`` with the capture-time flags of the claim its evidence rests on (if any)
    in ``evidence.time_flags`` and as notes at the end of its reasons; the status is kept."""
    c = report.evidence.claim
    if c is None:
        return report
    flags = capture_time_flags(
        c.claim.captured_at,
        c.device.enrolled_at if c.device is not None else None,
        c.receipt.integrated_at if c.receipt is not None and c.in_log else None,
        report.verified_at,
    )
    if not flags:
        return report
    return replace(
        report,
        reasons=(*report.reasons, *(f"note: {f.detail}" for f in flags)),
        evidence=replace(report.evidence, time_flags=flags),
    )


#: Longest revocation reason, in bytes of UTF-8: it is logged in the key-history entry,
#: which must fit a C2SP tlog-tiles entry bundle (`claims.MAX_LOG_ENTRY_BYTES`).
MAX_REVOCATION_REASON_BYTES = 1024


def check_revocation_reason(reason: str) -> None:
    """Raises ClaimError when ``reason`` is longer than `MAX_REVOCATION_REASON_BYTES`, is
    not valid UTF-8 text (a lone surrogate: a byte a terminal's encoding could not
    decode), or holds a character a device's label may not (`registry.unprintable`: a
    control character such as ESC or a line feed, a bidirectional override; it is
    logged for good and shown beside the device's verdicts: before, an
    escape sequence was logged as given)."""
    try:
        size = len(reason.encode())
    except UnicodeEncodeError as e:
        raise ClaimError(
            f"the revocation reason is not valid UTF-8 text (character {e.start + 1} is an"
            " undecodable byte): type it in a UTF-8 terminal"
        ) from e
    if size > MAX_REVOCATION_REASON_BYTES:
        raise ClaimError(
            f"the revocation reason is {size:,} bytes; at most {MAX_REVOCATION_REASON_BYTES:,}"
            " are logged (say more elsewhere and refer to it)"
        )
    if (bad := unprintable(reason)) is not None:
        raise ClaimError(
            f"the revocation reason holds {bad}: give a reason of printable characters, on one line"
        )


def check_revocation_time(effective_at: datetime | None, now: datetime) -> None:
    """Raises ClaimError when an operator's revocation time lies more than
    `REVOCATION_CLOCK_SKEW` after ``now``, the log's time (None means now and is always
    fine)."""
    if effective_at is not None and effective_at - now > REVOCATION_CLOCK_SKEW:
        raise ClaimError(
            f"the revocation time {effective_at:%Y-%m-%d %H:%M:%S} UTC is in the future"
            f" (the log's time is {now:%Y-%m-%d %H:%M:%S} UTC); a revocation takes"
            " effect now or earlier"
        )
