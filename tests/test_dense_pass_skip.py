"""The dense frame pass for trimmed clips is skipped when less than `DENSE_PASS_MIN_S`
is left for it, and its note says which bound left too little: the call's deadline, or
the video decoding limit (`InspectConfig.video_timeout_s`, set in-process).
Before, a decoding limit under 5 s with no deadline at all was reported as "the call's
deadline is too close". Real clips, a real in-process service with a logged video."""

from __future__ import annotations

from provenance.core.claims import Verdict
from provenance.media.inspect import InspectConfig, Upload
from provenance.server.pipeline import DENSE_PASS_MIN_S, VerificationPipeline
from tests.conftest import FIXTURES, SAMPLES
from tests.inproc import InProc

OTHER = FIXTURES / "phash" / "video" / "doorknob-hd-no-bar.mp4"
SKIPPED = "the dense frame pass for trimmed clips was skipped"


def _skip_notes(inproc: InProc, limit_s: float, left_s: float | None) -> list[str]:
    """The skip notes of an unrelated clip's report, the decoding limit ``limit_s`` and
    ``left_s`` seconds before the call's deadline (None: no deadline)."""
    dev = inproc.enroll()
    inproc.log_file(dev, SAMPLES / "fabric_pattern.mp4")  # a logged video: the pass is due
    pipe = VerificationPipeline(inproc.service, InspectConfig(video_timeout_s=limit_s))
    with Upload(1 << 30) as upload:
        upload.write(OTHER.read_bytes())
        report = pipe.verify_upload(upload, time_left=lambda: left_s)
    assert report.status is Verdict.UNSIGNED, report
    return [r for r in report.reasons if r.startswith(SKIPPED)]


def test_a_decoding_limit_under_the_pass_minimum_is_named_not_a_deadline(
    inproc: InProc,
) -> None:
    (note,) = _skip_notes(inproc, DENSE_PASS_MIN_S - 1, None)
    assert "deadline" not in note, note
    assert note == (
        f"{SKIPPED}: the video decoding limit (4 s) is under the 5 s the pass needs at least"
    ), note


def test_a_close_deadline_is_still_named(inproc: InProc) -> None:
    (note,) = _skip_notes(inproc, 120.0, DENSE_PASS_MIN_S + 2)
    assert note == f"{SKIPPED}: the call's deadline is too close", note
